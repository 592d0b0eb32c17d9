"""`python -m bisenet_pl.evaluate ckpt=PATH [mode=whole|slide|msflip] [official=true]`: mIoU on a split.

Each image is evaluated once, on one process, at its original label resolution: no
distributed padding can duplicate an image. Writes `results.json` (config, checkpoint, mode, per-class
numbers) into the run folder and prints the per-class table.

Examples:
    python -m bisenet_pl.evaluate ckpt=outputs/train/runs/<run>/checkpoints/last.ckpt
    python -m bisenet_pl.evaluate ckpt=bisenetv2_fcn_4x4_1024x1024_160k_cityscapes.pth \\
        data.root=data/cityscapes mode=msflip official=true
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from bisenet_pl.cli import (
    CONFIG_PATH,
    hydra_output_dir,
    keyword_options,
    quiet_environment,
    readable_errors,
    require_same_classes,
)

quiet_environment()

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

log = logging.getLogger("bisenet_pl.evaluate")


def evaluate(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    from hydra.utils import instantiate
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from torch.utils.data import DataLoader, Subset

    from bisenet_pl.data.preprocess import test_box
    from bisenet_pl.data.transforms import build_test_transform
    from bisenet_pl.errors import DatasetError
    from bisenet_pl.evaluation.metrics import SegmentationMetric, format_results_table, results_to_jsonable
    from bisenet_pl.evaluation.official import write_label_id_png
    from bisenet_pl.hardware import machine_info, resolve_device
    from bisenet_pl.inference.backends import load_net
    from bisenet_pl.inference.modes import InferenceConfig, require_logits, segment

    device = resolve_device(str(cfg.device))
    loaded = load_net(cfg.ckpt, str(cfg.backend), device)
    net, meta = loaded.net, loaded.meta
    classes = list(meta["classes"])
    inference = InferenceConfig.from_mode(
        cfg.mode,
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        **keyword_options(cfg.inference),
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    test_scale = test_box(meta, cfg.test_scale)
    inference.box = test_scale
    inference.warn_if_slide_is_whole()
    require_logits(net, inference, cfg.ckpt)
    require_same_classes(cfg.ckpt, classes, datamodule, "evaluate it")
    dataset: Any = datamodule.make_dataset(
        cfg.split, build_test_transform(tuple(test_scale)), inference.is_multi_pass, True
    )
    if cfg.limit:
        dataset = Subset(dataset, range(min(int(cfg.limit), len(dataset))))
    loader = DataLoader(dataset, batch_size=1, num_workers=int(cfg.num_workers), shuffle=False)
    metric = SegmentationMetric(num_classes=len(classes), ignore_index=int(datamodule.ignore_index)).to(
        device
    )
    official_dir = out_dir / "official_predictions" if cfg.official else None
    written: list[tuple[Path, str]] = []
    start = time.perf_counter()
    columns = (TextColumn("[bold]evaluate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("evaluate", total=len(dataset))
        for batch in loader:
            if "label" not in batch:
                raise DatasetError(
                    f"{batch['image_path'][0]}: split {cfg.split!r} has no labels to evaluate against; "
                    "use `python -m bisenet_pl.predict` for unlabelled images"
                )
            image = batch["image"].to(device)
            label = batch["label"].to(device)
            original = batch.get("original")
            pred = segment(net, image, tuple(label.shape[-2:]), inference, original).argmax(dim=1)
            metric.update(pred, label)
            if official_dir is not None:
                written.append(
                    (write_label_id_png(pred[0], official_dir, batch["name"][0]), batch["image_path"][0])
                )
            progress.advance(task)
    seconds = time.perf_counter() - start
    results = metric.compute()
    Console().print(format_results_table(results, classes))
    payload: dict[str, Any] = {
        "checkpoint": str(cfg.ckpt),
        "backend": cfg.backend,
        "split": cfg.split,
        "mode": cfg.mode,
        "inference": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(inference).items()},
        "images": len(dataset),
        "seconds": round(seconds, 2),
        "device": str(device),
        "machine": machine_info(device),
        "test_scale": list(test_scale),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "results": results_to_jsonable(results, classes),
    }
    if official_dir is not None:
        from bisenet_pl.evaluation.official import official_miou

        official = official_miou(written, out_dir)
        payload["official"] = official
        Console().print(
            f"mIoU  bisenet_pl: [bold]{float(results['mIoU']):.2f}[/]   "
            f"cityscapesscripts: [bold]{official['mIoU']:.2f}[/]"
        )
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2))
    log.info("results written to %s", out_dir / "results.json")
    from bisenet_pl.reporting.confusion import write_confusion_csv

    write_confusion_csv(out_dir, results["confusion_matrix"], classes)
    if cfg.get("report", True):  # report.html beside results.json (docs/report.md)
        from bisenet_pl.report import report_after

        report_after(out_dir, datamodule)
    return payload


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@readable_errors
def main(cfg: DictConfig) -> float:
    out_dir = hydra_output_dir() or Path(".")
    return float(evaluate(cfg, out_dir)["results"]["mIoU"])


if __name__ == "__main__":
    main()
