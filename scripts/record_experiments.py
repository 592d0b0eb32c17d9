"""Write `experiments/rows/<row>/`: the command, resolved config, mmseg's numbers and what we measured.

    python scripts/record_experiments.py

What "measured" can mean here: nobody on this project can download Cityscapes or train 160k iterations,
so each row records what is checked by construction (the resolved recipe, the model's size and cost, the
LR curve against mmseg's own values) and says plainly that the accuracy columns are not reproduced yet.
"""

from __future__ import annotations

import json
import platform
from datetime import date
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from bisenet_pl.models import Segmentor
from bisenet_pl.models.complexity import count_macs, count_parameters
from bisenet_pl.training.schedules import warmup_poly_lr

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "rows"

#: docs/reproduction.md#table (mmseg's configs/bisenetv2/README.md): mIoU, ms+flip mIoU, memory (GB/GPU), fps
#: (V100).
MMSEG = {
    "4x4": ("bisenetv2_fcn_4x4_1024x1024_160k_cityscapes", 73.21, 75.74, 7.64, 31.77),
    "ohem": ("bisenetv2_fcn_ohem_4x4_1024x1024_160k_cityscapes", 73.57, 75.80, 7.64, None),
    "4x8": ("bisenetv2_fcn_4x8_1024x1024_160k_cityscapes", 75.76, 77.79, 15.05, None),
    "fp16": ("bisenetv2_fcn_fp16_4x4_1024x1024_160k_cityscapes", 73.07, 75.13, 5.77, 36.65),
}
#: docs/reproduction.md#schedule: mmcv (v0.x) LR at selected iterations.
MMCV_LR = {0: 0.005, 500: 0.027423, 999: 0.049675, 1000: 0.049719, 16000: 0.045486, 80000: 0.026841,
           120000: 0.014430, 159999: 0.000101}  # fmt: skip


def main() -> None:
    model = Segmentor().eval()
    params = count_parameters(model)
    macs = count_macs(model, (1, 3, 1024, 2048))["total"] / 1e9
    lr_rows = [(t, warmup_poly_lr(t), ref) for t, ref in MMCV_LR.items()]
    for row, (mmseg_name, miou, ms, mem, fps) in MMSEG.items():
        with initialize_config_module("bisenet_pl.conf", version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={row}", "paths.output_dir=outputs/train/runs/RUN"])
        folder = OUT / row
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        command = f"python -m bisenet_pl.train experiment={row}"
        ohem = "OHEM thresh 0.7 / min_kept 10000 on all 5 heads"
        loss = ohem if cfg.loss.ohem_thresh else "CE on all 5 heads"
        lr_table = "\n".join(f"| {t} | {ours:.6f} | {ref:.6f} |" for t, ours, ref in lr_rows)
        (folder / "README.md").write_text(
            f"""# Row `{row}`: mmseg `{mmseg_name}`

Command: `{command}` (add `data.root=/path/to/cityscapes`; `trainer.devices` x `data.batch_size` =
{cfg.trainer.devices} x {cfg.data.batch_size}). Resolved config: [config.yaml](config.yaml).

| | mIoU | mIoU ms+flip | memory / GPU | fps (V100) |
| --- | --- | --- | --- | --- |
| mmseg (released checkpoint, 160k) | {miou} | {ms} | {mem} GB | {fps if fps else "-"} |
| bisenet_pl | not trained here | not trained here | not measured (no GPU) | not measured (no GPU) |

## What is checked by construction (recorded {date.today()}, {platform.processor() or platform.machine()},
torch {torch.__version__})

- Recipe: loss `{loss}`,
  precision `{cfg.trainer.precision}`{", static loss scale 512" if cfg.get("amp_loss_scale") else ""},
  SGD lr {cfg.module.lr} momentum {cfg.module.momentum} wd {cfg.module.weight_decay}, warm-up
  {cfg.module.warmup_steps} from x{cfg.module.warmup_ratio}, poly {cfg.module.power} to {cfg.module.min_lr},
  {cfg.trainer.max_steps} iterations, val/checkpoint every {cfg.trainer.val_check_interval}
  (`tests/test_train.py::test_each_table_row_is_mmseg_recipe`).
- Model: {params["inference"]:,} parameters for inference, {params["training"]:,} with the aux
  heads; {macs:.2f} GMACs at 1x3x1024x2048 (mmseg: 3,358,883 / 14,804,255 / 98.85 G).
- LR curve (ours vs mmseg v0.x, docs/reproduction.md#schedule):

| iteration | ours | mmseg |
| --- | --- | --- |
{lr_table}

- The row's recipe runs end to end as 2-process DDP on CPU at toy size
  (`tests/test_train.py::test_4x4_row_runs_as_two_process_ddp_on_cpu`).

To fill the bisenet_pl line: train with the command above on 4 GPUs, then
`python -m bisenet_pl.evaluate ckpt=<run>/checkpoints/last.ckpt data.root=... [mode=msflip]`, and add
`results.json` here.
"""
        )
    summary = {
        row: {"mmseg": {"mIoU": v[1], "ms_flip": v[2], "mem_gb": v[3], "fps": v[4]}}
        for row, v in MMSEG.items()
    }
    (OUT / "rows.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
