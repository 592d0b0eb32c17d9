"""The prepared GPU check: every table row's training step and the predict path's fps, in minutes.

A borrowed GPU comes rarely and briefly, so everything is decided here and tested on CPU
(`--cpu-smoke`, the same code at toy size). `scripts/gpu_check.sh` runs it; the result is one JSON and
one Markdown table with the device named. What it measures (docs/gpu_check.md):

- for each row (4x4, 4x8, fp16 with the static scale 512, ohem): `python -m bisenet_pl.train
  experiment=<row>` itself, one process per row on one GPU with the row's per-GPU batch, 1024x1024 crops
  of full-size synthetic frames, DataLoader workers: seconds per iteration (median of the timed steps),
  the share of the step spent waiting for data, peak allocated memory (against mmseg's table), the loss
  finite and falling;
- fps of the full predict path at 1024x2048, batch 1: fp32, fp16, fused + channels_last, torch.compile
  (against mmseg's V100 figures);
- with two or more GPUs, the 4x4 row as 2-process DDP: the heads' BN statistics must agree across ranks
  (SyncBN) and the backbone's must not (mmseg syncs only the heads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: mmseg's table, per GPU (docs/reproduction.md#table) and its V100 fps (docs/reproduction.md#speed).
MMSEG_MEMORY_GB = {"4x4": 7.64, "4x8": 15.05, "fp16": 5.77, "ohem": None}
MMSEG_FPS_V100 = {"fp32": 31.77, "fp16": 36.65}
ROWS = ("4x4", "4x8", "fp16", "ohem")


@dataclass
class Plan:
    """Sizes and counts of one check; `smoke()` is the same check at toy size for a CPU."""

    accelerator: str = "gpu"
    frame: tuple[int, int] = (1024, 2048)  # (h, w) of the synthetic frames
    crop: int = 1024
    train_images: int = 16
    steps: int = 30
    timed_from: int = 10  # steps before this one are warm-up (cudnn autotuning, allocator growth)
    workers: int = 4
    fps_size: tuple[int, int] = (1024, 2048)
    fps_warmup: int = 5
    fps_repeats: int = 50
    fps_paths: tuple[str, ...] = ("fp32", "fp16", "fused + channels_last", "compiled")

    @classmethod
    def smoke(cls) -> Plan:
        return cls(
            accelerator="cpu",
            frame=(64, 128),
            crop=64,
            train_images=4,
            steps=4,
            timed_from=1,
            workers=1,
            fps_size=(64, 128),
            fps_warmup=1,
            fps_repeats=2,
            fps_paths=("fp32", "fused + channels_last"),
        )


def train_command(row: str, plan: Plan, data: Path, run_dir: Path, devices: int = 1) -> list[str]:
    """`python -m bisenet_pl.train experiment=<row>` on `devices` devices, checkpoints and W&B off."""
    return [
        sys.executable,
        "-m",
        "bisenet_pl.train",
        f"experiment={row.partition('+')[0]}",  # "4x4+compile": the 4x4 row with module.compile=true
        *(["module.compile=true"] if row.endswith("+compile") else []),
        f"data.root={data}",
        f"data.synthetic_root={data}",
        f"data.num_workers={plan.workers}",
        f"data.crop_size=[{plan.crop},{plan.crop}]",
        f"data.scale=[{plan.frame[1]},{plan.frame[0]}]",
        f"trainer.accelerator={plan.accelerator}",
        f"trainer.devices={devices}",
        f"trainer.max_steps={plan.steps}",
        f"trainer.val_check_interval={plan.steps}",
        "+trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "test_after_fit=false",
        "logger=csv",
        "callbacks.iter_checkpoint=null",
        "callbacks.last_checkpoint=null",
        "callbacks.on_exception=null",
        "callbacks.wandb_predictions=null",
        "+callbacks.steps._target_=bisenet_pl.training.probes.StepRecorder",
        f"+callbacks.steps.out={run_dir / 'steps.json'}",
        f"hydra.run.dir={run_dir}",
    ]


def row_result(row: str, plan: Plan, recorded: dict[str, Any], batch: int) -> dict[str, Any]:
    """The row's line of the report from a `StepRecorder` file."""
    timed = recorded["step_s"][plan.timed_from :] or recorded["step_s"]
    waits = recorded["wait_s"][max(plan.timed_from - 1, 0) :] or recorded["wait_s"] or [0.0]
    loss = recorded["loss"]
    k = max(len(loss) // 4, 1)
    step = statistics.median(timed)
    wait = statistics.median(waits)
    finite = all(v == v and abs(v) != float("inf") for v in loss)
    return {
        "row": row,
        "batch_per_gpu": batch,
        "steps": len(recorded["step_s"]),
        "s_per_iter": round(step + wait, 4),
        "data_wait_share": round(wait / (step + wait), 3) if step + wait > 0 else None,
        "peak_gb": None if recorded["peak_gb"] is None else round(recorded["peak_gb"], 2),
        "mmseg_gb": MMSEG_MEMORY_GB.get(row.partition("+")[0]),
        "loss_first": round(statistics.mean(loss[:k]), 4),
        "loss_last": round(statistics.mean(loss[-k:]), 4),
        "loss_finite": finite,
        "loss_falling": finite and statistics.mean(loss[-k:]) < statistics.mean(loss[:k]),
    }


def run_row(row: str, plan: Plan, data: Path, out: Path, timeout: float) -> dict[str, Any]:
    run_dir = out / "rows" / row
    batch = 8 if row.startswith("4x8") else 4
    started = time.perf_counter()
    timeout *= 3 if row.endswith("+compile") else 1  # torch.compile's first steps compile the network
    proc = subprocess.run(
        train_command(row, plan, data, run_dir), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        return {"row": row, "error": (proc.stdout + proc.stderr)[-1500:], "returncode": proc.returncode}
    result = row_result(row, plan, json.loads((run_dir / "steps.json").read_text()), batch)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def fps_paths(plan: Plan) -> list[tuple[str, Any]]:
    from bisenet_pl.inference.accelerate import FastOptions

    options = {
        "fp32": FastOptions(),
        "fp16": FastOptions(precision="fp16"),
        "fused + channels_last": FastOptions(fuse=True, channels_last=True),
        "compiled": FastOptions(fuse=True, channels_last=True, compile=True),
    }
    return [(name, options[name]) for name in plan.fps_paths]


def run_fps(plan: Plan, device: str) -> list[dict[str, Any]]:
    """The predict path's speed at `plan.fps_size`, batch 1, per path (mmseg's timing method)."""
    import torch

    from bisenet_pl.speed.inference import InferenceBenchmark, run_inference_benchmark

    rows = []
    for name, options in fps_paths(plan):
        spec = InferenceBenchmark(
            device=torch.device(device),
            size=plan.fps_size,
            options=options,
            allow_compile=options.compile,
            warmup=plan.fps_warmup,
            repeats=plan.fps_repeats,
            images=2,
        )
        try:
            result = run_inference_benchmark(spec)
            rows.append({"path": name, "fps": result["fps"], "latency_ms_p50": result["latency_ms"]["p50"]})
        except Exception as err:  # one path failing (e.g. no compiler) must not lose the others
            rows.append({"path": name, "error": f"{type(err).__name__}: {err}"[:300]})
    return rows


def ddp_head_sync_check(plan: Plan, data: Path, out: Path, timeout: float) -> dict[str, Any]:
    """2-process DDP of the 4x4 row: last.ckpt holds rank zero's BN; the heads must be SyncBN-identical
    across ranks, which `SegmentationModule` checks itself when `BISENET_CHECK_BN_SYNC` is set."""
    import torch

    if plan.accelerator != "gpu" or torch.cuda.device_count() < 2:
        return {"ran": False, "reason": f"needs 2 GPUs, this machine has {torch.cuda.device_count()}"}
    run_dir = out / "rows" / "ddp"
    cmd = train_command("4x4", plan, data, run_dir, devices=2)
    cmd += [
        "+callbacks.bn_sync._target_=bisenet_pl.training.probes.BNSyncProbe",
        f"+callbacks.bn_sync.out={run_dir / 'bn.json'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"ran": True, "error": (proc.stdout + proc.stderr)[-1500:]}
    return {"ran": True, **json.loads((run_dir / "bn.json").read_text())}


def device_name(plan: Plan) -> str:
    import torch

    if plan.accelerator == "gpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    from bisenet_pl.hardware import cpu_info

    return f"CPU ({cpu_info().get('model', 'unknown')})"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# GPU check: {report['device']}",
        "",
        f"{report['date']}, torch {report['torch']}, PNGs decoded by {report.get('png_decoder', '?')}, "
        + ("CPU smoke run (toy sizes)" if report["smoke"] else "full size"),
        "",
        "| row | batch/GPU | s/iter | data wait | peak GB | mmseg GB | loss first -> last | finite "
        "| falling |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['row']} | failed: exit {r.get('returncode')} | | | | | | | |")
            continue
        lines.append(
            f"| {r['row']} | {r['batch_per_gpu']} | {r['s_per_iter']:.3f} "
            f"| {100 * (r['data_wait_share'] or 0):.0f} % "
            f"| {r['peak_gb'] if r['peak_gb'] is not None else 'n/a'} | {r['mmseg_gb'] or 'n/a'} "
            f"| {r['loss_first']} -> {r['loss_last']} | {r['loss_finite']} | {r['loss_falling']} |"
        )
    lines += [
        "",
        f"Predict path at {report['fps_size'][0]}x{report['fps_size'][1]}, batch 1 (mmseg on a V100: "
        f"fp32 {MMSEG_FPS_V100['fp32']}, fp16 {MMSEG_FPS_V100['fp16']} fps):",
        "",
        "| path | fps |",
        "| --- | --- |",
    ]
    for r in report["fps"]:
        lines.append(f"| {r['path']} | {r.get('fps', 'failed: ' + r.get('error', ''))} |")
    ddp = report["ddp"]
    lines += [
        "",
        "DDP heads-only SyncBN: " + (json.dumps(ddp) if ddp.get("ran") else f"not run ({ddp['reason']})"),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gpu_check.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check"), help="folder for the report")
    parser.add_argument("--cpu-smoke", action="store_true", help="the whole check at toy size on CPU")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated table rows")
    parser.add_argument("--timeout", type=float, default=150, help="seconds per training process")
    args = parser.parse_args(argv)

    import torch

    from bisenet_pl.data import png
    from bisenet_pl.data.synthetic import make_synthetic_cityscapes

    plan = Plan.smoke() if args.cpu_smoke else Plan()
    if plan.accelerator == "gpu" and not torch.cuda.is_available():
        print("error: no CUDA GPU here; run with --cpu-smoke for the toy-size check", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = make_synthetic_cityscapes(
        out / "data",
        n_train=plan.train_images,
        n_val=1,
        n_test=1,
        height=plan.frame[0],
        width=plan.frame[1],
        seed=0,
    )
    print(f"[gpu_check] data ready in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    # s/iteration with torch.compile (module.compile=true) beside the eager 4x4 row, on a GPU
    extra = ["4x4+compile"] if plan.accelerator == "gpu" and "4x4" in args.rows.split(",") else []
    for row in [*args.rows.split(","), *extra]:
        rows.append(run_row(row, plan, data, out, args.timeout))
        print(f"[gpu_check] {json.dumps(rows[-1])[:300]}", flush=True)
    device = "cuda" if plan.accelerator == "gpu" else "cpu"
    report = {
        "device": device_name(plan),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "png_decoder": png.DECODER,  # the data wait depends on it (pywuffs is compiled, not a wheel)
        "smoke": args.cpu_smoke,
        "plan": asdict(plan),
        "rows": rows,
        "fps_size": list(plan.fps_size),
        "fps": run_fps(plan, device),
        "ddp": ddp_head_sync_check(plan, data, out, args.timeout),
        "wall_s": None,
    }
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    failed = [r["row"] for r in rows if "error" in r or not r.get("loss_finite")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
