"""Per-sample statistics of one augmented training sample, shared by both sides of parity check 6.

Imported by `mmseg_side.py` in the parity venv and by `tests/parity/test_parity_augmentation.py` in the
project's, so both sides summarise their samples with the very same code (torch only, float64). A sample
is what the network receives: the normalised RGB image (3, H, W) after padding to the crop size, the
label (H, W) after padding with 255, the (h, w) of the crop before padding, the resize ratio applied to
the frame (resized width / original width) and whether it was flipped. The arithmetic is numpy's (one
thread, float64 accumulation); tensors come in and go out, for `torch.save`.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_CLASSES = 19
IGNORE = 255

#: the columns of `sample_stats`, in order
NAMES: tuple[str, ...] = (
    "scale",
    "padded",
    "ignored",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "max_class_share",
    *(f"class_{c:02d}" for c in range(NUM_CLASSES)),
)


def sample_stats(image: torch.Tensor, label: torch.Tensor, crop_hw: tuple[int, int], scale: float) -> dict:
    """`{"stats": float64 [len(NAMES)], "size": [H, W], "pad_ok": bool}` of one sample.

    padded: the fraction of the output that is padding (1 - h·w / (H·W)); ignored: the fraction of label
    pixels that are 255 (padding included); mean/std per channel of the normalised image (padding
    included: it is what the network sees); max_class_share: the largest class's share of the labelled
    pixels (what `cat_max_ratio` bounds); class_c: class c's fraction of all output pixels. pad_ok: every
    padded pixel (bottom/right of the crop) is 0 in the image and 255 in the label.
    """
    image = np.ascontiguousarray(torch.as_tensor(image).detach().cpu().numpy(), dtype=np.float32)
    label = np.ascontiguousarray(torch.as_tensor(label).detach().cpu().numpy())
    if image.ndim != 3 or image.shape[0] != 3 or label.shape != image.shape[1:]:
        raise ValueError(f"expected image (3, H, W) and label (H, W), got {image.shape} and {label.shape}")
    h, w = int(crop_hw[0]), int(crop_hw[1])
    size_h, size_w = label.shape
    total = size_h * size_w
    counts = np.bincount(label.ravel(), minlength=256).astype(np.float64)
    labelled = counts[:NUM_CLASSES].sum()
    flat = image.reshape(3, -1)
    mean = flat.sum(1, dtype=np.float64) / total  # float64 accumulation, one pass each
    var = np.einsum("ij,ij->i", flat, flat, dtype=np.float64) / total - mean * mean
    stats = [
        float(scale),
        1.0 - h * w / total,
        counts[IGNORE] / total,
        *mean.tolist(),
        *np.sqrt(np.maximum(var, 0)).tolist(),
        counts[:NUM_CLASSES].max() / labelled if labelled > 0 else 1.0,
        *(counts[:NUM_CLASSES] / total).tolist(),
    ]
    pad_ok = all(
        bool((image[:, rows, cols] == 0).all()) and bool((label[rows, cols] == IGNORE).all())
        for rows, cols in ((slice(h, None), slice(None)), (slice(None, h), slice(w, None)))
    )
    return {
        "stats": torch.tensor(stats, dtype=torch.float64),
        "size": [int(size_h), int(size_w)],
        "pad_ok": pad_ok,
    }


def collate(samples: list[dict], flips: list[bool]) -> dict:
    """The per-sample results of one side as plain tensors (what `torch.save` exchanges)."""
    return {
        "names": list(NAMES),
        "stats": torch.stack([s["stats"] for s in samples]),
        "flip": torch.tensor(flips, dtype=torch.bool),
        "sizes": torch.tensor([s["size"] for s in samples], dtype=torch.int64),
        "pad_ok": torch.tensor([s["pad_ok"] for s in samples], dtype=torch.bool),
    }
