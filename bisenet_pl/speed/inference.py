"""Inference speed of one path, measured as mmseg's `tools/benchmark.py` does, with the context a timing
needs (machine, command, every time) and the path's argmax agreement with the plain fp32 model."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from bisenet_pl.errors import ConfigError
from bisenet_pl.evaluation.agreement import label_agreement
from bisenet_pl.hardware import machine_info
from bisenet_pl.inference.backends import PLAIN, load_net
from bisenet_pl.inference.latency import latency_ms
from bisenet_pl.inference.modes import predict_labels
from bisenet_pl.speed.frames import dataset_frames, synthetic_frames
from bisenet_pl.speed.timing import make_predict_fn, peak_rss_mb, time_calls

log = logging.getLogger(__name__)


@dataclass
class InferenceBenchmark:
    """What to time. The defaults are mmseg's method: 5 warm-up calls, then 195 timed ones."""

    source: str | None = None
    backend: str = "torch"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    size: tuple[int, int] = (1024, 2048)
    fast: bool = False
    options: Any = None  # an accelerate.FastOptions, or None for the plain model
    fast_argmax: bool = False
    allow_compile: bool = False
    exporter: str = "torchscript"
    warmup: int = 5
    repeats: int = 195
    images: int = 4
    data_root: str | None = None
    split: str = "val"
    seed: int = 0
    agreement_images: int = 2

    def file_name(self) -> str:
        """`bench_inference_<device>_<backend>_<path flags>_<HxW>.json`: where a result is recorded."""
        h, w = self.size
        opts = self.options
        if self.fast:
            flags = "fast"
        else:
            reduced = opts is not None and opts.precision != "fp32"
            parts = (
                "fused" if opts is not None and opts.fuse else "",
                "cl" if opts is not None and opts.channels_last else "",
                "fp32" if opts is None else str(opts.precision),
                "heavy" if reduced and opts.scope == "heavy" else "",
                "compiled" if opts is not None and opts.compile else "",
                "fastargmax" if self.fast_argmax else "",
            )
            flags = "_".join(f for f in parts if f)
        return f"bench_inference_{self.device.type}_{self.backend}_{flags}_{h}x{w}.json"


def run_inference_benchmark(spec: InferenceBenchmark, command: str = "") -> dict[str, Any]:
    """Time `spec`'s path and return the result record (what `benchmark` prints and writes)."""
    from bisenet_pl.models.complexity import count_macs, count_parameters

    device, size = spec.device, spec.size
    if spec.repeats < 1 or spec.warmup < 0 or spec.images < 1:
        raise ConfigError("need repeats >= 1, warmup >= 0 and images >= 1")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # as mmseg's benchmark.py
    loaded = load_net(
        spec.source, spec.backend, device, spec.fast, spec.options, spec.allow_compile, spec.exporter
    )
    path_name = loaded.name
    fast_argmax = (spec.fast_argmax or spec.fast) and spec.backend == "torch"
    if fast_argmax:
        path_name += " + fast argmax"
    if spec.data_root:
        frames = dataset_frames(spec.data_root, spec.split, spec.images, size)
    else:
        frames = synthetic_frames(spec.images, size, spec.seed)
    frames = [f.to(device) for f in frames]
    predict_fn = make_predict_fn(loaded.net, device, fast_argmax)
    log.info(
        "benchmark: %s on %s, %dx%d, %d warm-up + %d timed calls",
        path_name,
        device,
        size[0],
        size[1],
        spec.warmup,
        spec.repeats,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_start = time.perf_counter()
    times = time_calls(predict_fn, frames, spec.warmup, 1, device)
    if spec.repeats > 1:
        estimate = times[0] * (spec.repeats - 1)
        if estimate > 60:
            log.info("~%.0f min to go (repeats=%d); repeats=N is quicker", estimate / 60, spec.repeats)
        times += time_calls(predict_fn, frames, 0, spec.repeats - 1, device)
    wall = time.perf_counter() - t_start
    memory: dict[str, float] = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.type == "cuda":
        memory["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    model = loaded.model
    agreement = None
    if model is not None and spec.source is not None and loaded.name != PLAIN:
        with torch.inference_mode():
            some = frames[: spec.agreement_images]
            agreement = label_agreement(
                (predict_labels(model, x).cpu() for x in some), (predict_fn(x) for x in some)
            )

    fps = len(times) / sum(times) if times else float("nan")
    latency = latency_ms(times)
    macs = params = None
    if model is not None:
        counts = count_parameters(model)
        params = counts.get("inference", counts["total"])
        macs = count_macs(model, (1, 3, *size))["total"]
    result: dict[str, Any] = {
        "benchmark": "inference",
        "path": path_name,
        "backend": spec.backend,
        "device": str(device),
        "size": list(size),
        "checkpoint": spec.source,
        "inputs": f"{spec.data_root}:{spec.split}" if spec.data_root else "synthetic street frames",
        "images": spec.images,
        "warmup": spec.warmup,
        "repeats": spec.repeats,
        "timed_region": "predict(net, image) incl. x8 bilinear upsample + argmax, labels copied to host",
        "fps": round(fps, 3),
        "latency_ms": {k: round(v, 3) for k, v in latency.items()},
        "memory": memory,
        "parameters": params,
        "gmacs": None if macs is None else round(macs / 1e9, 2),
        "agreement_with_fp32_eager": agreement,
        "times_s": [round(t, 5) for t in times],
        "wall_s": round(wall, 2),
        "machine": machine_info(device),
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    mem = (
        f"CUDA max allocated {memory['cuda_max_allocated_mb']:.0f} MB"
        if "cuda_max_allocated_mb" in memory
        else f"peak RSS {memory['peak_rss_mb']:.0f} MB"
    )
    result["summary"] = (
        f"{path_name}: {fps:.2f} fps, latency p50 {latency['p50']:.1f} ms, "
        f"p90 {latency['p90']:.1f} ms, {mem}"
        + (f", {params / 1e6:.2f} M params, {macs / 1e9:.2f} GMACs" if macs is not None and params else "")
        + (f", argmax agreement with fp32 eager {100 * agreement:.3f} %" if agreement is not None else "")
    )
    return result


__all__ = ["InferenceBenchmark", "run_inference_benchmark"]
