"""What a checkpoint must hold before anything uses it: real tensors with finite values, and a usable meta.

A file can be a well-formed checkpoint and still be useless: a diverged run's weights are NaN (every
pixel then comes out as class 0, without a word), and a hand-edited meta can hold a palette of pairs or a
string mean. Each check raises one `CheckpointError` naming the file and the first offending entries, so
no reader meets the problem later as an `AttributeError` or a `cv2.error`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bisenet_pl.errors import CheckpointError

#: How many offending names a message lists before "and N more".
SHOWN = 5


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def non_finite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity, in state-dict order."""
    bad = []
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(value.isfinite().all()):
            bad.append(name)
    return bad


def check_tensors(path: Path | str, state_dict: Mapping[str, Any], what: str = "its state dict") -> None:
    """Every entry a tensor, every floating tensor finite."""
    not_tensors = [
        f"{k} ({type(v).__name__})" for k, v in state_dict.items() if not isinstance(v, torch.Tensor)
    ]
    if not_tensors:
        raise CheckpointError(f"{path}: {what} has entries that are not tensors: {_listing(not_tensors)}")
    bad = non_finite_tensors(state_dict)
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} of {len(state_dict)} tensors hold NaN or infinite values "
            f"({_listing(bad)}); the run that wrote it had diverged. Use an earlier checkpoint of that run"
        )


def _numbers(value: Any, n: int) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == n
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def check_meta(path: Path | str, meta: Mapping[str, Any], num_classes: int) -> None:
    """Class names, palette, mean/std and test scale in the shapes every reader relies on."""
    problems = []
    classes = meta.get("classes")
    if not (isinstance(classes, Sequence) and not isinstance(classes, str) and len(classes) == num_classes):
        problems.append(f"'classes' must list {num_classes} names, got {classes!r:.80}")
    elif not all(isinstance(c, str) for c in classes):
        problems.append("'classes' must be strings")
    palette = meta.get("palette")
    if not (
        isinstance(palette, Sequence)
        and len(palette) == num_classes
        and all(_numbers(c, 3) and all(0 <= v <= 255 for v in c) for c in palette)
    ):
        problems.append(f"'palette' must hold {num_classes} [r, g, b] triples in 0..255, got {palette!r:.80}")
    for key in ("mean", "std"):
        if not _numbers(meta.get(key), 3):
            problems.append(f"'{key}' must be 3 numbers (one per RGB channel), got {meta.get(key)!r:.80}")
    if _numbers(meta.get("std"), 3) and any(v <= 0 for v in meta["std"]):
        problems.append(f"'std' must be positive, got {meta['std']!r}")
    scale = meta.get("test_scale")
    if scale is not None and not (_numbers(scale, 2) and all(v >= 1 for v in scale)):
        problems.append(f"'test_scale' must be null or two positive sizes (long, short), got {scale!r:.80}")
    if problems:
        raise CheckpointError(f"{path}: its meta is unusable: " + "; ".join(problems))


__all__ = ["check_meta", "check_tensors", "non_finite_tensors"]
