"""What a model needs besides its weights to be used: class names, palette, normalisation, test scale.

Every reader of a checkpoint (or an ONNX sidecar) completes what the file says with `complete_meta`, so
one rule decides the defaults: Cityscapes' classes and palette for a 19-class model, generic names and a
grey ramp otherwise, and the ImageNet mean/std the recipe normalises with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bisenet_pl.data.cityscapes import CLASSES, MEAN, PALETTE, STD


def default_meta(num_classes: int = len(CLASSES)) -> dict[str, Any]:
    """The defaults for a model with `num_classes` outputs: one class name and colour per channel."""
    if num_classes == len(CLASSES):
        classes = list(CLASSES)
        palette = [list(c) for c in PALETTE]
    else:
        classes = [f"class_{i}" for i in range(num_classes)]
        palette = [[(i * 255) // max(num_classes - 1, 1)] * 3 for i in range(num_classes)]
    return {"classes": classes, "palette": palette, "mean": list(MEAN), "std": list(STD)}


def complete_meta(num_classes: int, *stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """`default_meta(num_classes)` overridden by each of `stored` in turn (later ones win)."""
    meta = default_meta(num_classes)
    for entries in stored:
        if entries:
            meta.update(dict(entries))
    return meta


__all__ = ["complete_meta", "default_meta"]
