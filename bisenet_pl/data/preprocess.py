"""Image -> network input, written once: mmseg's test preprocessing and its inverse.

The dataset's pipelines, the Python API, the accelerated path's self-check, the benchmarks and the
W&B thumbnails all go through these functions, so the network sees the same floats whichever door an
image came in by. Sizes are always (height, width); a resize *box* is written as mmseg writes it,
(long edge, short edge), e.g. (2048, 1024).

The arithmetic is mmcv's `imnormalize` (float32 image minus the mean, times 1/std, both rounded to
float32), which the released checkpoints were trained with; resizes are cv2 bilinear on the uint8 image,
as mmcv's `imrescale` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from bisenet_pl.errors import DatasetError

#: ImageNet's RGB mean and std on the 0-255 scale: mmseg's normalisation for every BiSeNetV2 config.
MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
STD: tuple[float, float, float] = (58.395, 57.12, 57.375)
#: mmseg's Cityscapes resize box (long edge, short edge): the test scale of every table row, and the
#: default wherever a model does not say its own.
CITYSCAPES_BOX: tuple[int, int] = (2048, 1024)


def keep_ratio_size(height: int, width: int, box: Sequence[int]) -> tuple[int, int]:
    """mmcv's keep-ratio rule: the largest (h, w) of this aspect ratio fitting `box` (long, short edge).

    factor f = min(max(box) / long_edge, min(box) / short_edge); sides are `int(x * f + 0.5)`.
    """
    factor = float(min(max(box) / max(height, width), min(box) / min(height, width)))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def test_box(meta: Mapping[str, Any], choice: Sequence[int] | str = "checkpoint") -> tuple[int, int]:
    """The keep-ratio test box (long, short) a command uses: `choice` itself, or for "checkpoint" the
    model's own test scale (its meta), else `CITYSCAPES_BOX`."""
    if isinstance(choice, str):
        if choice != "checkpoint":
            raise ValueError(f"test_scale={choice!r}: give [long, short] or checkpoint")
        choice = meta.get("test_scale") or CITYSCAPES_BOX
    return int(choice[0]), int(choice[1])


def ratio_box(box: Sequence[int], ratio: float) -> tuple[int, int]:
    """The resize box of one multi-scale pass: mmseg v0.x scales the test box, `int(edge * r)`."""
    return int(box[0] * ratio), int(box[1] * ratio)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8; a missing, corrupt or truncated file is a `DatasetError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such image file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{path}: cannot decode the image (corrupt, truncated or not an image)")
    return np.ascontiguousarray(bgr[..., ::-1])


def normalize(
    image: np.ndarray, mean: Sequence[float] = MEAN, std: Sequence[float] = STD, bgr: bool = False
) -> np.ndarray:
    """(H, W, C) image -> RGB float32 `(x - mean) * (1 / std)`, a new array; `bgr=True` reverses the
    channels of an OpenCV BGR image first.

    The arithmetic is mmcv's `imnormalize` (what the released checkpoints were trained with): the mean
    and 1/std are computed in float64, rounded to float32, and applied in float32, which is also what
    OpenCV's `subtract`/`multiply` do with a float32 image. NumPy's `out=` is used instead of OpenCV's
    `dst` argument because it is a documented in-place write for every shape (OpenCV 5.1 silently
    allocates a new result for one-pixel-wide images and leaves `dst` untouched).
    """
    if image.ndim != 3 or image.shape[2] != len(mean) or len(std) != len(mean):
        raise ValueError(f"expected an (H, W, {len(mean)}) image matching mean/std, got shape {image.shape}")
    channels = image[..., ::-1] if bgr else image
    out = np.array(channels, dtype=np.float32, order="C", copy=True)
    np.subtract(out, np.asarray(mean, dtype=np.float64).astype(np.float32), out=out)
    np.multiply(out, (1.0 / np.asarray(std, dtype=np.float64)).astype(np.float32), out=out)
    return out


def resize_image(rgb: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """cv2 bilinear resize of a uint8 image to (h, w); the identity when it already has that size."""
    h, w = int(size[0]), int(size[1])
    if rgb.shape[:2] == (h, w):
        return rgb
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)


def preprocess(
    rgb: np.ndarray,
    box: Sequence[int] | None = CITYSCAPES_BOX,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> torch.Tensor:
    """mmseg's test pipeline on an RGB uint8 image: keep-ratio resize into `box` (None: keep the size),
    normalise -> (1, 3, H', W') float32."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if box is not None:
        rgb = resize_image(rgb, keep_ratio_size(rgb.shape[0], rgb.shape[1], box))
    return torch.from_numpy(normalize(rgb, mean, std)).permute(2, 0, 1).unsqueeze(0).contiguous()


def denormalize(image: torch.Tensor, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> np.ndarray:
    """The inverse of `normalize`: (3, H, W) or (N, 3, H, W) tensor -> (H, W, 3) or (N, H, W, 3) RGB uint8.

    Exact for tensors that came from uint8 images (the rounding undoes float32 error).
    """
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    rgb = (image.detach().float().cpu() * s + m).round().clamp(0, 255).to(torch.uint8)
    return rgb.movedim(-3, -1).numpy()


__all__ = [
    "CITYSCAPES_BOX",
    "MEAN",
    "STD",
    "denormalize",
    "keep_ratio_size",
    "normalize",
    "preprocess",
    "ratio_box",
    "read_rgb",
    "resize_image",
    "test_box",
]
