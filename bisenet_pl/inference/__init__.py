"""Inference: the modes (whole, slide, ms+flip), the `Predictor` API, files and video in and out,
pictures, the accelerated torch paths, and `load_net`, which picks a torch path or one of the runtimes
of `bisenet_pl.deploy` for what a user names. No Lightning, no Hydra: a deployment needs only torch
(and onnxruntime or OpenVINO for exported files)."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "InferenceConfig": "bisenet_pl.inference.modes",
    "segment": "bisenet_pl.inference.modes",
    "predict_labels": "bisenet_pl.inference.modes",
    "Predictor": "bisenet_pl.inference.predictor",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bisenet_pl.inference' has no attribute {name!r}")
