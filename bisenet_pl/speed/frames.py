"""Benchmark inputs: frame sizes from the command line, synthetic street frames or a dataset split,
through the test preprocessing (never timed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from bisenet_pl.data.preprocess import preprocess
from bisenet_pl.errors import BisenetError, ConfigError


def parse_size(size: str | Sequence[int]) -> tuple[int, int]:
    """`"1024x2048"` or `[1024, 2048]` -> (H, W)."""
    parts: list[str] | list[int]
    if isinstance(size, str):
        parts = size.lower().replace("*", "x").split("x")
    else:
        parts = list(size)
    try:
        h, w = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"size={size!r}: expected HxW, e.g. size=1024x2048") from None
    if h < 32 or w < 32:
        raise ConfigError(f"size={size!r}: at least 32x32")
    return h, w


def synthetic_frames(n: int, size: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    """`n` synthetic street frames (1, 3, H, W), normalised as the test pipeline does (not timed)."""
    from bisenet_pl.data.synthetic import render_scene

    return [preprocess(render_scene([seed, 1, i], size[0], size[1])["image"], None) for i in range(n)]


def dataset_frames(root: str | Path, split: str, n: int, size: tuple[int, int]) -> list[torch.Tensor]:
    """The first `n` images of a Cityscapes-layout split, through mmseg's test pipeline at `size`."""
    from bisenet_pl.data.cityscapes import CityscapesDataset
    from bisenet_pl.data.transforms import build_test_transform

    dataset = CityscapesDataset(root, split, transform=build_test_transform((size[1], size[0])))
    if len(dataset) == 0:
        raise BisenetError(f"data_root={root}: no images in split {split!r}")
    return [dataset[i]["image"].unsqueeze(0) for i in range(min(n, len(dataset)))]
