"""Inference: the modes (whole, slide, ms+flip), the `Predictor` API, files and video in and out,
pictures, the accelerated torch paths, and `load_net`, which picks a torch path or one of the runtimes
of `bisenet_pl.deploy` for what a user names. No Lightning, no Hydra: a deployment needs only torch
(and onnxruntime or OpenVINO for exported files)."""

from __future__ import annotations

from bisenet_pl._lazy import lazy_getattr

_LAZY = {
    "InferenceConfig": "bisenet_pl.inference.modes",
    "segment": "bisenet_pl.inference.modes",
    "predict_labels": "bisenet_pl.inference.modes",
    "Predictor": "bisenet_pl.inference.predictor",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr("bisenet_pl.inference", _LAZY)
