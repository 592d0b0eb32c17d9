"""The one dataset item every split of every dataset serves, so the module, the metric, ms+flip and the
W&B overlays never depend on where the data came from.

Item: `image` float32 (3, H, W) normalised RGB after `transform`; `label` int64 (H, W), class indices
with the ignore index (absent for unlabelled images); `name` (the file stem); `image_path` (str);
`ori_size` (H, W) on disk; `original` (H, W, 3) RGB uint8 when asked for (ms+flip resizes it once per
ratio).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bisenet_pl.data.preprocess import normalize
from bisenet_pl.errors import DatasetError


def make_item(
    image: np.ndarray,
    label: np.ndarray | None,
    name: str,
    image_path: Path,
    label_path: Path | None,
    transform: Callable[..., dict[str, Any]] | None,
    keep_original: bool = False,
) -> dict[str, Any]:
    """`image` BGR uint8 as decoded, `label` uint8 class indices; `transform(image=, mask=)` is an
    albumentations-style pipeline returning normalised RGB float32 HWC (None: normalise only)."""
    if label is not None and label.shape != image.shape[:2]:
        raise DatasetError(
            f"Image {image_path} is {image.shape[0]}x{image.shape[1]} but its label {label_path} is "
            f"{label.shape[0]}x{label.shape[1]} (HxW): they must match. Replace the mismatched file."
        )
    ori_size = (int(image.shape[0]), int(image.shape[1]))
    if transform is None:
        image_out = normalize(image, bgr=True)
    else:
        out = transform(**({"image": image} if label is None else {"image": image, "mask": label}))
        image_out = out["image"]
        if label is not None:
            label = out["mask"]
    item: dict[str, Any] = {
        "image": torch.from_numpy(np.ascontiguousarray(image_out.transpose(2, 0, 1))),
        "name": name,
        "image_path": str(image_path),
        "ori_size": ori_size,
    }
    if keep_original:
        item["original"] = torch.from_numpy(np.ascontiguousarray(image[..., ::-1]))
    if label is not None:
        item["label"] = torch.from_numpy(np.asarray(label).astype(np.int64))
    return item
