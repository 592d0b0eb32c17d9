"""Fine-tuning's starting point: a fresh network that takes every tensor of a checkpoint that fits.

`model.init_from=<file>` is not a resume (`ckpt_path`): no optimizer state, no step, no schedule, only
weights. The file may be ours, a Lightning `.ckpt` or an mmseg `.pth` (read and validated by
`read_checkpoint`, so NaN weights and code-running pickles are refused). Tensors whose name and shape
match are copied; the rest keep the network's own initialisation, which for the classifiers
(`conv_seg` of the decode and aux heads) of a model with another class count is exactly what a new
model gets from our init. The report says which tensors were loaded and which were not, and why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bisenet_pl.checkpoints.formats import read_checkpoint
from bisenet_pl.errors import CheckpointError
from bisenet_pl.models.segmentor import Segmentor

log = logging.getLogger(__name__)

#: The per-class layers: their shape follows the class count, so a checkpoint of another dataset
#: never fits them, and they are re-initialised.
CLASSIFIER_SUFFIXES = ("conv_seg.weight", "conv_seg.bias")


@dataclass
class InitReport:
    """What `load_matching` did, tensor by tensor (state-dict names, ours)."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # classifiers of another class count
    shape_mismatch: list[str] = field(default_factory=list)  # other tensors of another shape
    not_in_file: list[str] = field(default_factory=list)  # e.g. aux heads of an inference-only file
    unused: list[str] = field(default_factory=list)  # in the file, not in this network

    def summary(self) -> str:
        total = len(self.loaded) + len(self.reinitialised) + len(self.shape_mismatch) + len(self.not_in_file)
        lines = [f"init_from={self.path}: loaded {len(self.loaded)} of {total} tensors"]
        for what, names in (
            ("re-initialised (class count differs)", self.reinitialised),
            ("kept at init (shape differs)", self.shape_mismatch),
            ("kept at init (not in the file)", self.not_in_file),
            ("in the file but not in this network", self.unused),
        ):
            if names:
                shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
                lines.append(f"  {what}: {len(names)}: {shown}")
        return "\n".join(lines)


def load_matching(model: Segmentor, path: str | os.PathLike[str]) -> InitReport:
    """Copy into `model` every tensor of `path` whose name and shape match; returns the report."""
    contents = read_checkpoint(path)
    stored = contents.state_dict
    own = model.state_dict()
    report = InitReport(Path(path))
    updates: dict[str, torch.Tensor] = {}
    for name, tensor in own.items():
        if name not in stored:
            report.not_in_file.append(name)
        elif tuple(stored[name].shape) == tuple(tensor.shape):
            updates[name] = stored[name].to(tensor.dtype)
            report.loaded.append(name)
        elif name.endswith(CLASSIFIER_SUFFIXES):
            report.reinitialised.append(name)
        else:
            report.shape_mismatch.append(name)
    report.unused = [k for k in stored if k not in own]
    if not report.loaded:
        raise CheckpointError(
            f"init_from={path}: no tensor of the file fits this network (none has a matching name and "
            "shape); is it a BiSeNetV2 checkpoint of the same widths?"
        )
    model.load_state_dict(updates, strict=False)
    return report


def start_from(model: Segmentor, path: str | os.PathLike[str]) -> Segmentor:
    """`load_matching(model, path)` with its report in the log (so a run's `train.log` records what was
    loaded and what was not): what `model.init_from=<file>` does to the freshly built network."""
    report = load_matching(model, path)
    log.info("%s", report.summary())
    return model


__all__ = ["CLASSIFIER_SUFFIXES", "InitReport", "load_matching", "start_from"]
