"""Turning tensors and train-id maps into pictures: colour masks, overlays, W&B-sized thumbnails."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from bisenet_pl.data.cityscapes import IGNORE_INDEX, MEAN, PALETTE, STD, colorize


def colorize_mask(mask: np.ndarray, palette: Sequence[Sequence[int]] = PALETTE) -> np.ndarray:
    """(H,W) train ids -> (H,W,3) RGB uint8 in `palette` (official Cityscapes colours by default)."""
    return colorize(mask, palette)


def overlay(image: np.ndarray, mask: np.ndarray, opacity: float = 0.5, palette=PALETTE) -> np.ndarray:
    """Blend the colour mask over an RGB uint8 image; ignored pixels keep the image."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    colour = colorize_mask(mask, palette).astype(np.float32)
    out = image.astype(np.float32)
    keep = np.asarray(mask) != IGNORE_INDEX
    out[keep] = (1.0 - opacity) * out[keep] + opacity * colour[keep]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def denormalize(image: torch.Tensor, mean=MEAN, std=STD) -> np.ndarray:
    """(3,H,W) normalised RGB tensor -> (H,W,3) RGB uint8."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    rgb = (image.detach().float().cpu() * s + m).round().clamp(0, 255).to(torch.uint8)
    return rgb.permute(1, 2, 0).numpy()


def shrink(image: np.ndarray, label: np.ndarray, pred: np.ndarray, max_size: int):
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
