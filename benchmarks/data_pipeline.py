"""Train-pipeline throughput on 2048x1024 frames, against PNG decoding alone, on one thread.

    python benchmarks/data_pipeline.py [--images 4] [--repeats 3] [--json]

Why: one DataLoader worker must keep up with one GPU. A worker's time per image is decode + augment;
decode is the floor, so the ratio (pipeline / decode) says how much the augmentation
(docs/reproduction.md#augmentation) adds.
It writes a few synthetic 1024x2048 frames to a temporary folder, times (a) cv2 + PIL decoding of image
and label, (b) the full train item (decode, RandomResize, cat-max crop, flip, PhotoMetricDistortion,
normalise, pad, to tensor), with OpenCV single-threaded as in a worker, and writes
`experiments/bench_data_pipeline.json`. With `--json` the last stdout line is that JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bisenet_pl.data.cityscapes import CityscapesDataset  # noqa: E402
from bisenet_pl.data.synthetic import make_synthetic_cityscapes  # noqa: E402
from bisenet_pl.data.transforms import build_train_transform  # noqa: E402
from bisenet_pl.speed.timing import command_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _best_rate(fn, n_items: int, repeats: int) -> tuple[float, list[float]]:
    """Images per second of the fastest of `repeats` passes over `n_items` items (after one warm-up)."""
    for i in range(n_items):
        fn(i)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n_items):
            fn(i)
        rates.append(n_items / (time.perf_counter() - t0))
    return max(rates), rates


def _machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="distinct 2048x1024 frames (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts (default 3)")
    parser.add_argument("--json", action="store_true", help="print the result as the last stdout line")
    parser.add_argument("--output", type=Path, default=REPO / "experiments" / "bench_data_pipeline.json")
    args = parser.parse_args(argv)

    cv2.setNumThreads(0)  # as in every DataLoader worker (datamodule.worker_init)
    cv2.ocl.setUseOpenCL(False)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_cityscapes(
            Path(tmp) / "cs", n_train=args.images, n_val=0, n_test=0, height=1024, width=2048, seed=0
        )
        dataset = CityscapesDataset(root, "train", transform=build_train_transform(seed=0))
        samples = dataset.samples

        def decode(i: int) -> None:
            cv2.imread(str(samples[i].image), cv2.IMREAD_COLOR)
            np.asarray(Image.open(samples[i].label))

        def pipeline(i: int) -> None:
            dataset[i]

        decode_rate, decode_all = _best_rate(decode, len(samples), args.repeats)
        pipeline_rate, pipeline_all = _best_rate(pipeline, len(samples), args.repeats)

    result: dict[str, object] = {
        "benchmark": "data_pipeline",
        "input": "2048x1024 RGB PNG + labelIds PNG (synthetic, Cityscapes layout)",
        "pipeline": "decode + RandomResize(2048x1024, 0.5-2.0) + CatMaxRandomCrop(1024x1024, 0.75) + "
        "HorizontalFlip(0.5) + PhotoMetricDistortion + Normalize(RGB) + Pad(1024x1024) + to tensor",
        "threads": "1 (cv2.setNumThreads(0), torch.set_num_threads(1))",
        "images": args.images,
        "repeats": args.repeats,
        "decode_images_per_s": round(decode_rate, 2),
        "pipeline_images_per_s": round(pipeline_rate, 2),
        "decode_ms_per_image": round(1000 / decode_rate, 1),
        "pipeline_ms_per_image": round(1000 / pipeline_rate, 1),
        "augment_ms_per_image": round(1000 / pipeline_rate - 1000 / decode_rate, 1),
        "pipeline_over_decode_time": round(decode_rate / pipeline_rate, 2),
        "all_passes_images_per_s": {
            "decode": [round(r, 2) for r in decode_all],
            "pipeline": [round(r, 2) for r in pipeline_all],
        },
        "machine": _machine(),
        "command": command_line([sys.argv[0], *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"PNG decode alone: {decode_rate:.1f} images/s ({1000 / decode_rate:.0f} ms); full train item: "
        f"{pipeline_rate:.1f} images/s ({1000 / pipeline_rate:.0f} ms); pipeline takes "
        f"{decode_rate / pipeline_rate:.2f}x the decode time (one thread). Wrote {args.output}"
    )
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
