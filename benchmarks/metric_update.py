"""How long `SegmentationMetric.update` takes on one full-resolution Cityscapes map (1024x2048, uint8).

    python benchmarks/metric_update.py [--repeats 5] [--threads 1]

Why: evaluate updates the metric once per val image; this must stay far below a forward pass. A test
used to assert "< 2 s" here, which a busy machine can break without a code change; the number lives
here instead. Prints one JSON line: the best and median time in ms over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bisenet_pl.evaluation.metrics import SegmentationMetric


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 19, (1, 1024, 2048), generator=g, dtype=torch.uint8)
    pred = torch.randint(0, 19, (1, 1024, 2048), generator=g, dtype=torch.uint8)
    times = []
    for _ in range(args.repeats):
        metric = SegmentationMetric()
        start = time.perf_counter()
        metric.update(pred, target)
        times.append((time.perf_counter() - start) * 1000)
    result = {
        "what": "SegmentationMetric.update, 1x1024x2048 uint8",
        "threads": args.threads,
        "best_ms": round(min(times), 2),
        "median_ms": round(statistics.median(times), 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
