"""bisenet_pl: mmsegmentation's BiSeNetV2 for Cityscapes, on PyTorch Lightning + Hydra.

The top-level names are imported lazily so that `import bisenet_pl` stays cheap (no Lightning, no
albumentations) for users who only want the network or a checkpoint.
"""

from __future__ import annotations

import os

from bisenet_pl._lazy import lazy_getattr

# albumentations asks PyPI for a newer version on every import; we never want network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

_LAZY = {
    "Segmentor": "bisenet_pl.models.segmentor",
    "BiSeNetV2": "bisenet_pl.models.bisenetv2",
    "load_model": "bisenet_pl.checkpoints",
    "save_checkpoint": "bisenet_pl.checkpoints",
    "CheckpointError": "bisenet_pl.checkpoints",
    "Predictor": "bisenet_pl.inference.predictor",
}

__all__ = sorted(_LAZY) + ["__version__"]

__getattr__ = lazy_getattr("bisenet_pl", _LAZY)
