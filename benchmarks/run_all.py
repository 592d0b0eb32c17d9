"""`make bench`: every benchmark, each against its own reference measured in the same run, and a summary.

    python benchmarks/run_all.py [--ckpt PATH] [--quick] [--compile]

Runs, each in a fresh process (so one benchmark's allocations and threads do not colour the next):

1. `benchmarks/data_pipeline.py`: train-pipeline throughput vs PNG decoding alone (one thread);
2. `benchmarks/inference_speed.py`: the plain fp32 eager model (unfused, NCHW, as mmseg runs it) against
   every fast path and ONNX Runtime, at 512x1024 and 1024x2048, full predict path, interleaved;
3. `benchmarks/train_step.py`: seconds per training iteration, Lightning vs a plain PyTorch loop;
4. `benchmarks/train_vs_mmseg.py`: time to train against mmseg 1.2.2 in the same run (the parity venv,
   `make parity-env`): the data pipeline per core from the PNGs and from the decoded-frame cache, and the
   training step; `experiments/bench_train.md` / `.json`.

Each script writes its `experiments/bench_*.json`; this one adds `experiments/bench_summary.md` (the
Markdown tables for the README) and `bench_summary.json`. Fewer images and repeats than mmseg's 200
images (see each script's defaults), so the whole run takes a few minutes on a 2-core CPU; `--quick`
shrinks it further (smoke test, not for the README).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
EXPERIMENTS = REPO / "experiments"


def run(script: str, *args: str) -> dict[str, Any]:
    """Run one benchmark script with `--json`, echo its output, return its last-line JSON."""
    cmd = [sys.executable, str(BENCH / script), *args, "--json"]
    print(f"\n$ python benchmarks/{script} {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = proc.stdout.rstrip().splitlines()
    for line in lines[:-1]:
        print(line)
    if proc.returncode != 0 or not lines:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{script} failed with status {proc.returncode}")
    result = json.loads(lines[-1])
    print(f"({script}: {time.perf_counter() - t0:.0f} s)")
    return result


def summary_markdown(inference: dict[str, Any], train: dict[str, Any], data: dict[str, Any]) -> str:
    m = inference["machine"]
    device = f"{m['cpu_count']}-core {m['cpu']} CPU, torch {m['torch']}"
    from inference_speed import markdown, verdict_text  # the tables of experiments/bench_inference.md

    return (
        f"### Inference ({device}, {inference['threads']} threads)\n\n"
        f"Full predict path (network, x8 bilinear upsample, argmax, labels to host), batch 1, synthetic "
        f"street frames, {inference['repeats']} interleaved rounds per size (mmseg times 200 images); "
        f"ratio = median over rounds of (path time / plain fp32 eager time in the same round). Agreement: "
        f"share of pixels whose label equals the plain fp32 eager model's, on the benchmark frames and on "
        f"the synthetic dataset's {inference['val_images']} val images at the model's own scale. "
        f"Model: {inference['model']}.\n"
        f"Command: `{inference['command']}`\n\n"
        + markdown(inference)
        + "\n"
        + "".join(f"- {line}.\n" for line in verdict_text(inference).splitlines())
        + "\n"
        f"### Training step ({device}, {train['threads']} threads)\n\n"
        f"| loop | s / iteration (median) | ratio |\n| --- | --- | --- |\n"
        f"| plain PyTorch (forward, 5-head CE, backward, SGD, poly LR) | {train['plain_s']:.3f} | 1.00x |\n"
        f"| Lightning `SegmentationModule` in `Trainer.fit` | {train['lightning_s']:.3f} | "
        f"**{train['ratio']:.3f}x** |\n\n"
        f"Batch {train['batch']} of {train['crop'][0]}x{train['crop'][1]} crops, fp32, aux heads on, "
        f"{train['timed_iterations_each']} timed iterations each, interleaved (a plain iteration inside each "
        f"Lightning iteration); ratio = median of the per-iteration ratios. "
        f"Command: `{train['command']}`\n\n"
        f"### Data pipeline (one worker thread)\n\n"
        f"| step | ms / image | images / s |\n| --- | --- | --- |\n"
        f"| PNG decode (image + label) | {data['decode_ms_per_image']} | {data['decode_images_per_s']} |\n"
        f"| full train item (decode + mmseg's augmentations) | {data['pipeline_ms_per_image']} | "
        f"{data['pipeline_images_per_s']} |\n\n"
        f"Pipeline / decode time: **{data['pipeline_over_decode_time']}x**. Command: `{data['command']}`\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=None, help="checkpoint for the inference benchmark")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes and counts")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inference)")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where the JSON/MD go (default experiments/; --quick: a temp dir)",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(BENCH))
    if args.out_dir is None:
        args.out_dir = Path(tempfile.mkdtemp(prefix="bench_quick_")) if args.quick else EXPERIMENTS
    out = args.out_dir

    t0 = time.perf_counter()
    inference_args = ["--ckpt", args.ckpt] if args.ckpt else []
    if args.compile:
        inference_args.append("--compile")
    outputs = {
        name: ["--output", str(out / f"bench_{name}.json")]
        for name in ("data_pipeline", "inference", "train_step")
    }
    if args.quick:
        data = run("data_pipeline.py", "--images", "1", "--repeats", "1", *outputs["data_pipeline"])
        inference = run("inference_speed.py", *inference_args, "--sizes", "128x256,256x512", "--repeats", "2",
                        "--images", "1", "--exporter", "torchscript", *outputs["inference"])  # fmt: skip
        train = run("train_step.py", "--crop", "128", "--iters", "2", *outputs["train_step"])
    else:
        data = run("data_pipeline.py", *outputs["data_pipeline"])
        inference = run("inference_speed.py", *inference_args, *outputs["inference"])
        train = run("train_step.py", *outputs["train_step"])
    versus = ["--out-dir", str(out)] + (["--frames", "1", "--rounds", "1", "--iters", "1", "--crop", "128"]
                                        if args.quick else [])  # fmt: skip
    mmseg_train = run("train_vs_mmseg.py", *versus)
    text = summary_markdown(inference, train, data)
    text += "\n" + (out / "bench_train.md").read_text()
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_summary.md").write_text(text)
    (out / "bench_summary.json").write_text(
        json.dumps(
            {
                "inference": inference,
                "train_step": train,
                "data_pipeline": data,
                "train_vs_mmseg": mmseg_train,
            },  # fmt: skip
            indent=2,
        )
        + "\n"
    )
    print("\n" + "=" * 100 + "\n" + text)
    print(f"make bench: {time.perf_counter() - t0:.0f} s; results in {out}/bench_*.json, table in "
          f"{out / 'bench_summary.md'}")  # fmt: skip


if __name__ == "__main__":
    main()
