"""`make demo` / `python -m bisenet_pl.demo`: train, evaluate and predict on the synthetic dataset, on CPU.

Runs the same three commands a user would type, one after another, so that what the demo shows is what
the CLI does:

    python -m bisenet_pl.train experiment=demo hydra.run.dir=<run>
    python -m bisenet_pl.evaluate ckpt=<run>/checkpoints/last.ckpt hydra.run.dir=<run>/evaluate
    python -m bisenet_pl.predict ckpt=<run>/checkpoints/last.ckpt input=<a val image> output=<run>/predictions

Extra arguments are passed to the training command (e.g. `python -m bisenet_pl.demo trainer.max_steps=100`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path


def _run(args: list[str]) -> None:
    print("\n$ " + " ".join(["python", *args[1:]]), flush=True)
    result = subprocess.run(args, check=False)
    if result.returncode != 0:
        print(f"demo: command failed with status {result.returncode}", file=sys.stderr)
        raise SystemExit(result.returncode)


def main(argv: list[str] | None = None) -> None:
    extra = list(sys.argv[1:] if argv is None else argv)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    run_dir = Path("outputs") / "demo" / stamp
    py = sys.executable
    print(
        "bisenet_pl demo: BiSeNetV2 (mmseg's recipe, shrunk) on the synthetic Cityscapes-layout dataset, CPU"
    )
    t0 = time.perf_counter()
    _run([py, "-m", "bisenet_pl.train", "experiment=demo", f"hydra.run.dir={run_dir}", *extra])
    t_train = time.perf_counter() - t0
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        print(f"demo: no checkpoint at {ckpt}", file=sys.stderr)
        raise SystemExit(1)
    eval_dir = run_dir / "evaluate"
    _run(
        [
            py, "-m", "bisenet_pl.evaluate", f"ckpt={ckpt}", f"hydra.run.dir={eval_dir}",
        ]
    )  # fmt: skip
    results = json.loads((eval_dir / "results.json").read_text())
    val_images = sorted(Path("data/synthetic_cityscapes/leftImg8bit/val").rglob("*_leftImg8bit.png"))
    if val_images:
        _run(
            [
                py, "-m", "bisenet_pl.predict", f"ckpt={ckpt}", f"input={val_images[0]}",
                f"output={run_dir / 'predictions'}", "outputs=[color,overlay]",
                f"hydra.run.dir={run_dir / 'predict'}",
            ]
        )  # fmt: skip
    total = time.perf_counter() - t0
    miou = results["results"]["mIoU"]
    print("\n" + "=" * 72)
    print(f"demo finished in {total / 60:.1f} min (training {t_train / 60:.1f} min)")
    print(f"val mIoU of the final checkpoint: {miou:.2f}  (aAcc {results['results']['aAcc']:.2f})")
    print(f"checkpoint:  {ckpt}")
    print(f"logs/config: {run_dir}  (metrics in csv/metrics.csv, results in evaluate/results.json)")
    print(f"predictions: {run_dir / 'predictions'}")
    print(f"evaluate report: {eval_dir / 'report.html'}")
    print("next: python -m bisenet_pl.predict ckpt=" + str(ckpt) + " input=<image or folder>")
    print("=" * 72)
    # Last line: the run's report (curves, per-class table, confusion matrix, val images; docs/report.md).
    print(f"report: {run_dir / 'report.html'}")


if __name__ == "__main__":
    main()
