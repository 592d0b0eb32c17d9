"""What this machine is: the device to use, whether the CPU computes bf16 natively, and the facts a
timing depends on. One reader of `/proc/cpuinfo` for the whole package."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

import torch

from bisenet_pl.errors import ConfigError


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """`{"model": ..., "flags": set(...)}` from Linux's `/proc/cpuinfo` (empty elsewhere)."""
    model = ""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "flags": frozenset(flags)}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 convolutions natively here (avx512_bf16 or AMX-BF16).

    `torch.ops.mkldnn._is_mkldnn_bf16_supported()` alone is also true on plain AVX-512 CPUs, where oneDNN
    emulates bf16 and is slower than fp32; so the CPU flags are checked too (Linux `/proc/cpuinfo`;
    elsewhere we cannot tell and say no).
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_info()["flags"])


def supported_precisions(device: torch.device | str) -> list[str]:
    """Precisions with fast kernels on `device`, fastest first: fp16 and bf16 on CUDA (bf16 where the GPU
    has it), bf16 on CPUs with native bf16, fp32 everywhere."""
    device = torch.device(device)
    if device.type == "cuda":
        out = ["fp16"]
        if torch.cuda.is_bf16_supported():
            out.append("bf16")
        return [*out, "fp32"]
    if device.type == "cpu" and cpu_has_native_bf16():
        return ["bf16", "fp32"]
    return ["fp32"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`"auto"` -> CUDA when available, else CPU; a CUDA device on a machine without one is a
    `ConfigError` (one readable message), not a failure deep inside torch."""
    if isinstance(name, torch.device):
        device = name
    elif str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(str(name))
        except RuntimeError:
            raise ConfigError(f"device={name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is available here: use device=cpu")
    return device


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a timing depends on: CPU model and cores, threads, library versions, GPU name."""
    cpu = cpu_info()
    info: dict[str, Any] = {
        "cpu": cpu["model"] or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")(),
        "avx512_bf16": "avx512_bf16" in cpu["flags"],
        "amx_bf16": "amx_bf16" in cpu["flags"],
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


__all__ = ["cpu_has_native_bf16", "cpu_info", "machine_info", "resolve_device", "supported_precisions"]
