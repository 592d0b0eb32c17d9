"""Requests/s and latency of a running `python -m bisenet_pl.serve` under concurrent clients.

    python -m bisenet_pl.serve ckpt=<ckpt> port=8000 &
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 \
        --images data/synthetic_cityscapes/leftImg8bit/val --concurrency 8 --requests 64 [--json]

Why: the server's batching trades a little latency (the batch window) for throughput; this measures both
from the client's side (the time from sending the bytes to having the whole answer), plus the batch
sizes the server reported (`X-Batch-Size`). `--concurrency` threads each send requests back to back,
cycling through the PNG/JPEG files under `--images`, until `--requests` are done; two warm-up requests
are not counted. With `--json` the last stdout line is the result as a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import httpx


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--images", type=Path, required=True, help="a folder of PNG/JPEG files")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--endpoint", default="predict", choices=["predict", "overlay"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"--images {args.images}: no PNG or JPEG files")
    bodies = [p.read_bytes() for p in files]
    url = f"{args.url}/{args.endpoint}"
    with httpx.Client(timeout=120) as client:
        for body in bodies[:2]:
            client.post(url, content=body).raise_for_status()

    latencies: list[float] = []
    batches: Counter[int] = Counter()
    lock = threading.Lock()
    counter = iter(range(args.requests))

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            for i in counter:
                body = bodies[i % len(bodies)]
                start = time.perf_counter()
                r = client.post(url, content=body)
                elapsed = time.perf_counter() - start
                r.raise_for_status()
                with lock:
                    latencies.append(elapsed * 1000)
                    batches[int(r.headers["x-batch-size"])] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    health = httpx.get(f"{args.url}/health").json()
    result = {
        "url": url,
        "model": health["model"],
        "backend": health["backend"],
        "path": health["path"],
        "image_size": httpx.post(url, content=bodies[0], timeout=120).headers["x-image-size"],
        "concurrency": args.concurrency,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 2),
        "latency_ms": {
            "p50": round(_percentile(latencies, 0.5), 1),
            "p90": round(_percentile(latencies, 0.9), 1),
            "p99": round(_percentile(latencies, 0.99), 1),
            "mean": round(statistics.fmean(latencies), 1),
        },
        "batch_sizes": {str(k): v for k, v in sorted(batches.items())},
        "server_batching": health["batching"],
    }
    print(
        f"{result['requests']} requests, concurrency {args.concurrency}: {result['requests_per_s']} req/s, "
        f"latency p50 {result['latency_ms']['p50']} ms, p90 {result['latency_ms']['p90']} ms; "
        f"batch sizes {result['batch_sizes']}"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
