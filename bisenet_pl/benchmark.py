"""`python -m bisenet_pl.benchmark [ckpt=PATH] [size=1024x2048] [device=cpu|cuda] [precision=fp32|bf16|fp16]
[backend=torch|onnxruntime] [fuse=true] [channels_last=true] [compile=true] [fast_argmax=true] [fast=true]`

Inference speed measured as mmseg's `benchmark.py` does (SPEC §12): batch 1, the full predict path
(network, the x8 bilinear upsample to the image size and the argmax, result copied to the host;
preprocessing excluded, as in mmseg 1.x), `warmup` untimed calls and then `repeats` timed ones;
fps = repeats / total time (mmseg: 200 images, the first 5 warm-up, fps = 195 / sum of times). Prints
fps, latency p50/p90, peak memory (CUDA max allocated, or the process's peak RSS on CPU), parameters and
GMACs (mmseg's get_flops count: backbone + decode head, no final upsample), and writes a JSON into
`experiments/` with the machine, the exact command and every timing.

Inputs are `images` synthetic street frames (`bisenet_pl.data.synthetic`) at `size`, cycled; with
`data_root=` the first `images` frames of a Cityscapes split go through the test pipeline instead. The
network's cost does not depend on the content; the `fast_argmax` path does a little (it interpolates only
at class boundaries), so use a trained checkpoint for that path: a random-init model has noisy labels
everywhere and makes it look slower than it is.

When `ckpt` is given and the path is not the plain fp32 model, the argmax agreement with the plain
fp32 eager model is measured on the first `agreement_images` frames and reported (issue 7's guarantee:
>= 99.9 %).

Examples:
    python -m bisenet_pl.benchmark ckpt=model.ckpt device=cuda precision=fp16           # mmseg's method
    python -m bisenet_pl.benchmark ckpt=model.ckpt device=cpu repeats=10 fast=true      # CPU, quick
    python -m bisenet_pl.benchmark ckpt=model.onnx backend=onnxruntime repeats=10
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bisenet_pl.cli import quiet_environment, readable_errors

quiet_environment()

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from bisenet_pl.errors import BisenetError, ConfigError  # noqa: E402

log = logging.getLogger("bisenet_pl.benchmark")


# --------------------------------------------------------------------------------------------------
# Pieces shared with benchmarks/inference_speed.py
# --------------------------------------------------------------------------------------------------


def parse_size(size: str | Sequence[int]) -> tuple[int, int]:
    """`"1024x2048"` or `[1024, 2048]` -> (H, W)."""
    if isinstance(size, str):
        parts = size.lower().replace("*", "x").split("x")
    else:
        parts = list(size)
    try:
        h, w = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"size={size!r}: expected HxW, e.g. size=1024x2048") from None
    if h < 32 or w < 32:
        raise ConfigError(f"size={size!r}: at least 32x32")
    return h, w


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a timing depends on: CPU model and cores, threads, library versions, GPU name."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):  # other jobs on the machine: the context of any timing
        info["load_average_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return info


def synthetic_frames(n: int, size: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    """`n` synthetic street frames (1, 3, H, W), normalised as the test pipeline does (not timed)."""
    from bisenet_pl.data.synthetic import render_scene
    from bisenet_pl.segmenter import preprocess

    return [preprocess(render_scene([seed, 1, i], size[0], size[1])["image"], None) for i in range(n)]


def dataset_frames(root: str | Path, split: str, n: int, size: tuple[int, int]) -> list[torch.Tensor]:
    """The first `n` images of a Cityscapes-layout split, through mmseg's test pipeline at `size`."""
    from bisenet_pl.data.cityscapes import CityscapesDataset
    from bisenet_pl.data.transforms import build_test_transform

    dataset = CityscapesDataset(root, split, transform=build_test_transform((size[1], size[0])))
    if len(dataset) == 0:
        raise BisenetError(f"data_root={root}: no images in split {split!r}")
    return [dataset[i]["image"].unsqueeze(0) for i in range(min(n, len(dataset)))]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_predict_fn(
    net: Callable[[torch.Tensor], torch.Tensor], device: torch.device, fast_argmax: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """One timed unit: the full predict path of one image, its labels on the host (as mmseg times it)."""
    from bisenet_pl.inference import InferenceConfig, predict

    cfg = InferenceConfig()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return predict(net, x, None, cfg, fast_argmax=fast_argmax).cpu()

    return run


def time_calls(
    fn: Callable[[torch.Tensor], Any],
    inputs: Sequence[torch.Tensor],
    warmup: int,
    repeats: int,
    device: torch.device,
) -> list[float]:
    """Seconds per call of `repeats` timed calls after `warmup` untimed ones, cycling through `inputs`."""
    i = 0
    for _ in range(warmup):
        fn(inputs[i % len(inputs)])
        i += 1
    synchronize(device)
    times = []
    for _ in range(repeats):
        x = inputs[i % len(inputs)]
        i += 1
        synchronize(device)
        t0 = time.perf_counter()
        fn(x)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without numpy."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(times: Sequence[float]) -> dict[str, float]:
    """fps as mmseg computes it (repeats / total), latency median/p50/p90/min/mean in ms."""
    return {
        "fps": len(times) / sum(times) if times else float("nan"),
        "latency_ms_p50": 1000 * percentile(times, 50),
        "latency_ms_p90": 1000 * percentile(times, 90),
        "latency_ms_min": 1000 * min(times) if times else float("nan"),
        "latency_ms_mean": 1000 * statistics.fmean(times) if times else float("nan"),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def command_line(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command as typed: `python -m <module> args...`, or `python <script> args...`."""
    args = list(sys.argv if argv is None else argv)
    if module:
        prog = f"-m {module}"
    else:
        prog = args[0]
        with_repo = Path(prog).resolve()
        try:
            prog = with_repo.relative_to(Path.cwd()).as_posix()
        except ValueError:
            pass
    return "python " + " ".join([prog, *(shlex.quote(a) for a in args[1:])])


# --------------------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------------------


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available here: use device=cpu")
    return device


def build_model(ckpt: str | None, device: torch.device) -> torch.nn.Module:
    from bisenet_pl.checkpoints import load_model
    from bisenet_pl.models import Segmentor

    if ckpt is None:
        log.warning("no ckpt: benchmarking a freshly initialised model (speed only; no agreement check)")
        return Segmentor(aux_heads=False).to(device).eval()
    return load_model(ckpt, device=device)


def build_net(
    cfg: DictConfig, model: torch.nn.Module | None, device: torch.device, workdir: Path
) -> tuple[Any, str]:
    """The network callable and a readable name of its path."""
    from bisenet_pl.fast import PRECISIONS, FastNet, FastOptions, fastest_net, supported_precisions

    if cfg.backend == "onnxruntime":
        from bisenet_pl.export import OnnxNet, export_onnx

        if cfg.ckpt is not None and str(cfg.ckpt).endswith(".onnx"):
            path = Path(str(cfg.ckpt))
        else:
            assert model is not None
            path = export_onnx(
                model, workdir / "model.onnx", getattr(model, "meta", None), exporter=cfg.exporter
            )
        return OnnxNet(path, device=device), "onnxruntime fp32 (fused)"
    if cfg.backend != "torch":
        raise ConfigError(f"backend={cfg.backend!r}: choose torch or onnxruntime")
    assert model is not None
    if cfg.fast:
        return fastest_net(model, device, allow_compile=bool(cfg.compile))
    if cfg.precision in PRECISIONS and cfg.precision not in supported_precisions(device):
        log.warning("precision=%s has no fast kernels on %s: measuring it anyway", cfg.precision, device)
    try:
        options = FastOptions(
            fuse=bool(cfg.fuse),
            channels_last=bool(cfg.channels_last),
            precision=str(cfg.precision),
            compile=bool(cfg.compile),
            scope=str(cfg.scope),
        )
        if options == FastOptions():
            return model, "plain fp32 eager (unfused, NCHW)"
        return FastNet(model, options), options.name
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _agreement(model: torch.nn.Module, predict_fn: Callable, images: Sequence[torch.Tensor]) -> float:
    from bisenet_pl.inference import predict

    same = total = 0
    with torch.inference_mode():
        for x in images:
            ref = predict(model, x).cpu()
            out = predict_fn(x)
            same += int((ref == out).sum())
            total += ref.numel()
    return same / total


def benchmark(cfg: DictConfig, argv: Sequence[str] | None = None) -> dict[str, Any]:
    from bisenet_pl.models.complexity import count_macs, count_parameters

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = _device(str(cfg.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # as mmseg's benchmark.py
    size = parse_size(cfg.size)
    warmup, repeats = int(cfg.warmup), int(cfg.repeats)
    if repeats < 1 or warmup < 0 or int(cfg.images) < 1:
        raise ConfigError("need repeats >= 1, warmup >= 0 and images >= 1")
    onnx_file = cfg.ckpt is not None and str(cfg.ckpt).endswith(".onnx")
    if onnx_file and cfg.backend != "onnxruntime":
        raise ConfigError(f"ckpt={cfg.ckpt} is an ONNX file: add backend=onnxruntime")
    model = None if onnx_file else build_model(cfg.ckpt, device)

    with tempfile.TemporaryDirectory() as tmp:
        net, path_name = build_net(cfg, model, device, Path(tmp))
        fast_argmax = bool(cfg.fast_argmax or cfg.fast) and cfg.backend == "torch"
        if fast_argmax:
            path_name += " + fast argmax"
        if cfg.data_root:
            frames = dataset_frames(cfg.data_root, str(cfg.split), int(cfg.images), size)
        else:
            frames = synthetic_frames(int(cfg.images), size, int(cfg.seed))
        frames = [f.to(device) for f in frames]
        predict_fn = make_predict_fn(net, device, fast_argmax)
        print(
            f"benchmark: {path_name} on {device}, {size[0]}x{size[1]}, "
            f"{warmup} warm-up + {repeats} timed calls"
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_start = time.perf_counter()
        times = time_calls(predict_fn, frames, warmup, min(repeats, 1), device)
        if repeats > 1:
            estimate = times[0] * (repeats - 1)
            if estimate > 60:
                print(f"  ~{estimate / 60:.0f} min to go (repeats={repeats}); repeats=N for a quicker look")
            times += time_calls(predict_fn, frames, 0, repeats - 1, device)
        wall = time.perf_counter() - t_start
        memory: dict[str, float] = {"peak_rss_mb": round(peak_rss_mb(), 1)}
        if device.type == "cuda":
            memory["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        agreement = None
        if model is not None and cfg.ckpt is not None and path_name != "plain fp32 eager (unfused, NCHW)":
            agreement = _agreement(model, predict_fn, frames[: int(cfg.agreement_images)])

    stats = summarize(times)
    macs = params = None
    if model is not None:
        params = count_parameters(model).get("inference", count_parameters(model)["total"])
        macs = count_macs(model, (1, 3, *size))["total"]
    result: dict[str, Any] = {
        "benchmark": "inference",
        "path": path_name,
        "backend": cfg.backend,
        "device": str(device),
        "size": list(size),
        "checkpoint": None if cfg.ckpt is None else str(cfg.ckpt),
        "inputs": f"{cfg.data_root}:{cfg.split}" if cfg.data_root else "synthetic street frames",
        "images": int(cfg.images),
        "warmup": warmup,
        "repeats": repeats,
        "timed_region": "predict(net, image) incl. x8 bilinear upsample + argmax, labels copied to host",
        **{k: round(v, 3) for k, v in stats.items()},
        "memory": memory,
        "parameters": params,
        "gmacs": None if macs is None else round(macs / 1e9, 2),
        "agreement_with_fp32_eager": agreement,
        "times_s": [round(t, 5) for t in times],
        "wall_s": round(wall, 2),
        "machine": machine_info(device),
        "command": command_line(argv, module="bisenet_pl.benchmark"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    mem = (
        f"CUDA max allocated {memory['cuda_max_allocated_mb']:.0f} MB"
        if "cuda_max_allocated_mb" in memory
        else f"peak RSS {memory['peak_rss_mb']:.0f} MB"
    )
    print(
        f"{path_name}: {stats['fps']:.2f} fps, latency p50 {stats['latency_ms_p50']:.1f} ms, "
        f"p90 {stats['latency_ms_p90']:.1f} ms, {mem}"
        + (f", {params / 1e6:.2f} M params, {macs / 1e9:.2f} GMACs" if macs is not None and params else "")
        + (f", argmax agreement with fp32 eager {100 * agreement:.3f} %" if agreement is not None else "")
    )
    out = Path(str(cfg.output)) if cfg.output else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return result


def default_output_name(cfg: DictConfig) -> str:
    """`bench_inference_<device>_<backend>_<path flags>_<HxW>.json`."""
    h, w = parse_size(cfg.size)
    if cfg.fast:
        flags = "fast"
    else:
        flags = "_".join(
            f
            for f in (
                "fused" if cfg.fuse else "",
                "cl" if cfg.channels_last else "",
                str(cfg.precision),
                "heavy" if cfg.precision != "fp32" and cfg.scope == "heavy" else "",
                "compiled" if cfg.compile else "",
                "fastargmax" if cfg.fast_argmax else "",
            )
            if f
        )
    device = (
        "cuda"
        if str(cfg.device) == "auto" and torch.cuda.is_available()
        else str(cfg.device).replace("auto", "cpu")
    )
    return f"bench_inference_{device.split(':')[0]}_{cfg.backend}_{flags}_{h}x{w}.json"


@hydra.main(version_base="1.3", config_path="conf", config_name="benchmark")
@readable_errors
def main(cfg: DictConfig) -> float:
    if cfg.output == "auto":
        OmegaConf.update(
            cfg, "output", str(Path(str(cfg.experiments_dir)) / default_output_name(cfg)), merge=False
        )
    return float(benchmark(cfg)["fps"])


if __name__ == "__main__":
    main()
