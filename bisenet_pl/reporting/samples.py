"""A fixed set of val images through a checkpoint: image, ground truth, prediction, for the report's grid.

The set is the same for every run on the same split (evenly spaced over the split's sorted file list), so
two runs' grids compare image by image. Inference is whole-image fp32, as `evaluate`'s table.
"""

from __future__ import annotations

import logging
from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Panel:
    name: str
    image: np.ndarray  # (H, W, 3) RGB uint8 at the label's size (shrunk for the page)
    label: np.ndarray  # (H, W) uint8, ignore index kept
    pred: np.ndarray  # (H, W) uint8
    ignore_index: int = 255

    @property
    def accuracy(self) -> float:
        """Percent of labelled pixels predicted right."""
        keep = self.label != self.ignore_index
        return float((self.label[keep] == self.pred[keep]).mean() * 100) if keep.any() else float("nan")


def fixed_indices(length: int, count: int) -> list[int]:
    """`count` indices evenly spaced over `length` items, first and last included; the same every time."""
    if length <= 0 or count <= 0:
        return []
    if count >= length:
        return list(range(length))
    return sorted({int(round(v)) for v in np.linspace(0, length - 1, count)})


def val_panels(
    checkpoint: str | Path,
    dataset: Any,
    count: int = 4,
    backend: str = "torch",
    test_scale: tuple[int, int] | None = None,
    max_size: int = 512,
    ignore_index: int = 255,
) -> list[Panel]:
    """Predict `count` fixed images of `dataset` (items as the test pipeline gives them) with
    `checkpoint`, on the CPU in fp32, whole-image mode."""
    import torch

    from bisenet_pl.data.preprocess import denormalize
    from bisenet_pl.inference.backends import load_net
    from bisenet_pl.inference.modes import InferenceConfig, segment
    from bisenet_pl.inference.visualize import shrink

    loaded = load_net(str(checkpoint), backend, torch.device("cpu"))
    meta = loaded.meta
    box = tuple(test_scale or meta.get("test_scale") or (2048, 1024))
    cfg = InferenceConfig(mode="whole", box=cast("tuple[int, int]", box), mean=tuple(meta["mean"]),
                          std=tuple(meta["std"]))  # fmt: skip
    panels = []
    for index in fixed_indices(len(cast(Sized, dataset)), count):
        item = dataset[index]
        if "label" not in item:
            continue
        image = item["image"][None].float()
        label = item["label"].numpy().astype(np.uint8)
        with torch.no_grad():
            pred = segment(loaded.net, image, tuple(label.shape), cfg).argmax(dim=1)[0]
        rgb = denormalize(item["image"], cfg.mean, cfg.std)
        rgb, label, pred_np = shrink(rgb, label, pred.numpy().astype(np.uint8), max_size)
        panels.append(Panel(str(item.get("name", index)), rgb, label, pred_np, ignore_index))
    return panels
