"""`Segmenter`: the Python API for users, and what the predict CLI runs.

    seg = bisenet_pl.Segmenter("model.ckpt", device="cpu", mode="whole")
    mask = seg("frankfurt_000000_000294_leftImg8bit.png")   # (H, W) uint8 train ids
    rgb = seg.colorize(mask)

It reads any checkpoint `load_model` understands (ours, a training `.ckpt`, an mmseg `.pth`), applies
mmseg's test preprocessing (keep-ratio resize into the test scale, normalise) and the one inference
path, and returns the train-id map at the image's own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from bisenet_pl.data.cityscapes import MEAN, PALETTE, STD
from bisenet_pl.data.transforms import rescale_size
from bisenet_pl.errors import DatasetError
from bisenet_pl.inference import InferenceConfig, Net, predict, segment
from bisenet_pl.visualize import colorize_mask, overlay

ImageLike = np.ndarray | str | Path


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8; a missing, corrupt or truncated file is a `DatasetError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such image file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{path}: cannot decode the image (corrupt, truncated or not an image)")
    return np.ascontiguousarray(bgr[..., ::-1])


def preprocess(
    rgb: np.ndarray,
    test_scale: Sequence[int] | None = (2048, 1024),
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> torch.Tensor:
    """mmseg's test pipeline on an RGB uint8 image: keep-ratio resize into `test_scale` (cv2 bilinear),
    normalise (float64 constants as mmcv), -> (1, 3, H', W') float32."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if test_scale is not None:
        new_w, new_h = rescale_size(w, h, test_scale)
        if (new_w, new_h) != (w, h):
            rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    norm = (rgb.astype(np.float32) - np.asarray(mean, np.float64)) * (1.0 / np.asarray(std, np.float64))
    return torch.from_numpy(norm.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()


class Segmenter:
    """A trained model ready to segment images: load once, call on arrays or paths.

    Args:
        checkpoint: a checkpoint path (any format `load_model` reads) or an already-built `Segmentor`.
        device: "cpu", "cuda", "cuda:1", or "auto".
        mode: "whole" (mmseg's table), "slide", or "msflip" (6 ratios x flip).
        fast: pick the fastest inference path this machine supports that keeps the accuracy guarantees
            (see `bisenet_pl.fast`); False runs the plain fp32 model, as mmseg does.
        test_scale: the keep-ratio resize box (long, short); default from the checkpoint, else (2048, 1024).
            None keeps the image's size.
        **inference: `InferenceConfig` overrides (crop_size, stride, scales, flip).
    """

    def __init__(
        self,
        checkpoint: str | Path | torch.nn.Module,
        device: str = "cpu",
        mode: str = "whole",
        fast: bool = False,
        test_scale: Sequence[int] | None | str = "checkpoint",
        **inference: Any,
    ) -> None:
        from bisenet_pl.checkpoints import default_meta, load_model

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if isinstance(checkpoint, torch.nn.Module):
            self.model = checkpoint.to(self.device).eval()
        else:
            self.model = load_model(checkpoint, device=self.device)
        num_classes = int(getattr(self.model, "config", {}).get("num_classes", len(PALETTE)))
        self.meta: dict[str, Any] = {
            **default_meta(num_classes),
            **dict(getattr(self.model, "meta", {}) or {}),
        }
        if test_scale == "checkpoint":
            test_scale = self.meta.get("test_scale") or (2048, 1024)
        self.test_scale = tuple(test_scale) if test_scale is not None else None
        self.cfg = InferenceConfig.from_mode(
            mode, mean=tuple(self.meta["mean"]), std=tuple(self.meta["std"]), **inference
        )
        self.fast = fast
        self.net: Net = self.model
        self.path_name = "fp32 eager"
        if fast:
            from bisenet_pl.fast import fastest_net

            self.net, self.path_name = fastest_net(self.model, self.device)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.meta["palette"]]

    def _prepare(self, image: ImageLike) -> tuple[torch.Tensor, tuple[int, int]]:
        """(the normalised, test-scale-resized batch on the device, the image's own (H, W))."""
        rgb = read_rgb(image) if isinstance(image, (str, Path)) else image
        x = preprocess(rgb, self.test_scale, self.meta["mean"], self.meta["std"]).to(self.device)
        return x, (int(rgb.shape[0]), int(rgb.shape[1]))

    def scores(self, image: ImageLike) -> torch.Tensor:
        """Class scores (1, C, H, W) at the image's size: logits (one pass) or mean probabilities."""
        x, size = self._prepare(image)
        return segment(self.net, x, size, self.cfg)

    def __call__(self, image: ImageLike) -> np.ndarray:
        """The train-id map (H, W) uint8 of an RGB uint8 array or an image path.

        Goes through `inference.predict`; with `fast=True` its exact cheap upsample + argmax is used
        where it applies (one whole-image pass at the image's own size).
        """
        x, size = self._prepare(image)
        labels = predict(self.net, x, size, self.cfg, fast_argmax=self.fast)
        return labels[0].to(torch.uint8).cpu().numpy()

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """The official-palette RGB picture of a train-id map."""
        return colorize_mask(mask, self.palette)

    def overlay(self, image: ImageLike, mask: np.ndarray, opacity: float = 0.5) -> np.ndarray:
        rgb = read_rgb(image) if isinstance(image, (str, Path)) else image
        return overlay(rgb, mask, opacity, self.palette)
