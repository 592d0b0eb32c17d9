"""A batch of decoded images through a `Predictor`'s net, and the encodings of its answers.

A batch holds images of one size (the micro-batcher's key is the image shape) and runs as one forward
pass through `bisenet_pl.inference.video.segment_frames`, the predictor's own steps for one image
applied to N at once (the same preprocessing, net, inference config and fast argmax), so each mask is
the mask `Predictor` gives for that image alone, up to the last-ulp differences of a batched
convolution (tested equal on the test model).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from bisenet_pl.inference.video import segment_frames

if TYPE_CHECKING:
    from bisenet_pl.inference.predictor import Predictor


@dataclass(frozen=True)
class Segmented:
    """One image's answer: its train-id `mask`, the `batch_size` it ran in, the batch's network time."""

    mask: np.ndarray
    batch_size: int
    inference_ms: float


def image_key(rgb: np.ndarray) -> tuple[int, ...]:
    """The batching key: images stack into one tensor only when their shapes are equal."""
    return tuple(rgb.shape)


def segment_batch(predictor: Predictor, images: Sequence[np.ndarray]) -> list[Segmented]:
    """The masks of same-size RGB uint8 images, from one forward pass of the predictor's net."""
    if len({image_key(rgb) for rgb in images}) != 1:
        raise ValueError("segment_batch() needs images of one size (the batcher keys batches by shape)")
    start = time.perf_counter()
    masks = segment_frames(predictor, images)
    ms = (time.perf_counter() - start) * 1000.0
    return [Segmented(np.ascontiguousarray(m), len(images), ms) for m in masks]


def class_shares(mask: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """{class name: share of the image's pixels} for every class of the model (the shares sum to 1)."""
    counts = np.bincount(mask.ravel(), minlength=256)[: len(class_names)]
    return {name: float(c) / mask.size for name, c in zip(class_names, counts, strict=True)}


def encode(image: np.ndarray, fmt: str = "png") -> bytes:
    """PNG or JPEG bytes of an RGB (H, W, 3) or single-channel (H, W) uint8 array."""
    array = image[..., ::-1] if image.ndim == 3 else image  # OpenCV writes BGR
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(array), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return buf.tobytes()


__all__ = ["Segmented", "class_shares", "encode", "image_key", "segment_batch"]
