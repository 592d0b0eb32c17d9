"""Every bisenet_pl name the parity suite uses, imported in this one place.

The package is being reorganised into subpackages; each name is looked up in its current module first
and in its older home after, so a move is absorbed here (or fixed here, in one line) instead of in
every test. Names resolve lazily (`ours.Segmentor`), so one broken import fails only the checks that
use it; a name found nowhere raises ImportError naming where it was looked for.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any


def _pick(name: str, *modules: str) -> Any:
    tried = []
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            tried.append(f"{module} ({e})")
            continue
        value = getattr(mod, name, None)
        if value is not None and not inspect.ismodule(value):
            return value
        tried.append(f"{module} (no {name})")
    raise ImportError(f"bisenet_pl name {name!r} not found; tried: {'; '.join(tried)}")


#: name -> the modules that may hold it, newest home first
_WHERE: dict[str, tuple[str, ...]] = {
    "Segmentor": (
        "bisenet_pl.models",
        "bisenet_pl.models.segmentor",
    ),
    "load_model": (
        "bisenet_pl.checkpoints",
        "bisenet_pl.checkpoints.formats",
    ),
    "read_checkpoint": (
        "bisenet_pl.checkpoints",
        "bisenet_pl.checkpoints.formats",
    ),
    "convert": (
        "bisenet_pl.convert",
        "bisenet_pl.checkpoints.convert",
    ),
    "MultiHeadLoss": (
        "bisenet_pl.training.losses",
        "bisenet_pl.training.losses",
    ),
    "ohem_weights": (
        "bisenet_pl.training.losses",
        "bisenet_pl.training.losses",
    ),
    "SegmentationModule": (
        "bisenet_pl.training.module",
        "bisenet_pl.training.module",
    ),
    "warmup_poly_lr": (
        "bisenet_pl.training.schedules",
        "bisenet_pl.training.schedules",
    ),
    "InferenceConfig": (
        "bisenet_pl.inference.modes",
        "bisenet_pl.inference.modes",
    ),
    "segment": (
        "bisenet_pl.inference.modes",
        "bisenet_pl.inference.modes",
    ),
    "MS_SCALES": (
        "bisenet_pl.inference.modes",
        "bisenet_pl.inference.modes",
    ),
    "SegmentationMetric": (
        "bisenet_pl.evaluation.metrics",
        "bisenet_pl.evaluation.metrics",
    ),
    "build_train_transform": ("bisenet_pl.data.transforms",),
    "build_test_transform": ("bisenet_pl.data.transforms",),
    "CLASSES": ("bisenet_pl.data.cityscapes",),
    "seed_transform": ("bisenet_pl.data.cityscapes", "bisenet_pl.data.transforms"),
    "find_samples": ("bisenet_pl.data.cityscapes",),
    "load_image": ("bisenet_pl.data.cityscapes",),
    "load_label": ("bisenet_pl.data.cityscapes",),
    "LABEL_ID_TO_TRAIN_ID": ("bisenet_pl.data.cityscapes",),
    "make_synthetic_cityscapes": ("bisenet_pl.data.synthetic",),
}

_cache: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"tests.parity.ours has no {name!r}")
    if name not in _cache:
        _cache[name] = _pick(name, *_WHERE[name])
    return _cache[name]


def check_imports() -> dict[str, str]:
    """Every name's import error (empty when all resolve)."""
    errors = {}
    for name in _WHERE:
        try:
            __getattr__(name)
        except ImportError as e:
            errors[name] = str(e)
    return errors
