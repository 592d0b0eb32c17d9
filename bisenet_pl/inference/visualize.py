"""Train-id maps as pictures: colour masks, overlays, W&B-sized thumbnails."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from bisenet_pl.data.cityscapes import IGNORE_INDEX, PALETTE


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]] = PALETTE) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) RGB uint8 in `palette` (one RGB per class; Cityscapes' official
    colours by default, a checkpoint's own palette otherwise); 255 and ids past the palette are black."""
    ids = np.asarray(mask)
    if ids.dtype != np.uint8:
        ids = np.where((ids >= 0) & (ids < 256), ids, IGNORE_INDEX).astype(np.uint8)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    lut[IGNORE_INDEX] = 0
    return lut[ids]


def overlay(
    image: np.ndarray, mask: np.ndarray, opacity: float = 0.5, palette: Sequence[Sequence[int]] = PALETTE
) -> np.ndarray:
    """Blend the colour mask over an RGB uint8 image; ignored pixels keep the image."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    colour = colorize(mask, palette).astype(np.float32)
    out = image.astype(np.float32)
    keep = np.asarray(mask) != IGNORE_INDEX
    out[keep] = (1.0 - opacity) * out[keep] + opacity * colour[keep]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def shrink(
    image: np.ndarray, label: np.ndarray, pred: np.ndarray, max_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale an image and two maps (nearest) so the long side is at most `max_size` (for dashboards)."""
    if label.shape != image.shape[:2]:
        image = cv2.resize(image, (label.shape[1], label.shape[0]), interpolation=cv2.INTER_LINEAR)
    h, w = label.shape
    factor = max_size / max(h, w)
    if factor >= 1:
        return image, label, pred
    size = (max(1, int(w * factor + 0.5)), max(1, int(h * factor + 0.5)))
    return (
        cv2.resize(image, size, interpolation=cv2.INTER_AREA),
        cv2.resize(label, size, interpolation=cv2.INTER_NEAREST),
        cv2.resize(pred, size, interpolation=cv2.INTER_NEAREST),
    )
