"""Timing as mmseg's `tools/benchmark.py` does: the full predict path of one image per call (network,
the x8 bilinear upsample, argmax, labels copied to the host), warm-up calls excluded, the device
synchronised around each call; fps = calls / total time."""

from __future__ import annotations

import re
import resource
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bisenet_pl.inference.modes import InferenceConfig, predict_labels


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_predict_fn(
    net: Callable[[torch.Tensor], torch.Tensor], device: torch.device, fast_argmax: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """One timed unit: the full predict path of one image, its labels on the host (as mmseg times it)."""
    cfg = InferenceConfig()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return predict_labels(net, x, None, cfg, fast_argmax=fast_argmax).cpu()

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


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def portable(text: str | Path, root: str | Path | None = None) -> str:
    """A path (or a `key=path` argument) as a reader of experiments/ can use it: relative to `root`
    (default: the current folder, the repository for `make bench`), a demo run's timestamped folder
    written `outputs/demo/<run>/`; never this machine's absolute paths."""
    text = str(text)
    key, sep, value = text.rpartition("=") if "=" in text and not text.startswith("/") else ("", "", text)
    path = Path(value)
    if path.is_absolute():
        try:
            value = path.resolve().relative_to(Path(root or Path.cwd()).resolve()).as_posix()
        except ValueError:
            value = path.name  # outside the repository: only its name means anything elsewhere
    return key + sep + re.sub(r"outputs/demo/[^/<]+/", "outputs/demo/<run>/", value)


def command_line(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command as typed, with portable paths: `python -m <module> args...`, or `python <script>`."""
    args = [portable(a) for a in (sys.argv if argv is None else argv)]
    prog = f"-m {module}" if module else args[0]
    return "python " + " ".join([prog, *(shlex.quote(a) for a in args[1:])])
