"""`Predictor`: the Python API for users, and what the predict CLI runs.

    predictor = bisenet_pl.Predictor("model.ckpt", device="cpu", mode="whole")
    mask = predictor("frankfurt_000000_000294_leftImg8bit.png")   # (H, W) uint8 train ids
    rgb = predictor.colorize(mask)

It reads any checkpoint `load_model` understands (ours, a training `.ckpt`, an mmseg `.pth`) or, with
`backend=`, an exported model (`load_net`: `Predictor("model.onnx", backend="onnxruntime")`), applies
mmseg's test preprocessing (keep-ratio resize into the test scale, normalise) and the one inference
path, and returns the train-id map at the image's own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bisenet_pl.data.preprocess import preprocess, read_rgb, test_box
from bisenet_pl.deploy.runtime.baked import resized_pixels
from bisenet_pl.deploy.runtime.base import takes_uint8
from bisenet_pl.hardware import resolve_device
from bisenet_pl.inference.modes import InferenceConfig, Net, predict_labels, require_logits, segment
from bisenet_pl.inference.visualize import colorize, overlay

if TYPE_CHECKING:
    from bisenet_pl.models.segmentor import Segmentor

ImageLike = Any  # an RGB uint8 array, a PIL image, or an image path


def _as_rgb(image: Any) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from a numpy array or a PIL image (converted to RGB)."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image, in any mode
        image = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(image)


class Predictor:
    """A trained model ready to segment images: load once, call on arrays or paths.

    Args:
        checkpoint: a checkpoint path (any format `load_model` reads) or an already-built `Segmentor`.
        device: "cpu", "cuda", "cuda:1", or "auto".
        mode: "whole" (mmseg's table), "slide", or "msflip" (6 ratios x flip).
        fast: pick the fastest inference path this machine supports that keeps the accuracy guarantees
            (see `bisenet_pl.inference.accelerate`); False runs the plain fp32 model, as mmseg does.
            Applies to backend="torch".
        test_scale: the keep-ratio resize box (long, short); default from the checkpoint, else
            `CITYSCAPES_BOX`. None keeps the image's size.
        backend: "torch", or any other of `bisenet_pl.inference.backends.BACKENDS` ("onnxruntime" runs an
            exported `.onnx` file as it is, a PyTorch checkpoint exported first).
        **inference: `InferenceConfig` overrides (crop_size, stride, scales, flip).
    """

    def __init__(
        self,
        checkpoint: str | Path | Segmentor,
        device: str = "cpu",
        mode: str = "whole",
        fast: bool = False,
        test_scale: Sequence[int] | None | str = "checkpoint",
        backend: str = "torch",
        **inference: Any,
    ) -> None:
        from bisenet_pl.inference.backends import PLAIN, load_net

        self.device = resolve_device(device)
        # Built as evaluate and benchmark build theirs, so a path measured there is the path run here.
        loaded = load_net(checkpoint, backend, self.device, fast=fast)
        self.backend = backend
        self.model = loaded.model  # the PyTorch model behind the net; None for an exported file
        self.meta: dict[str, Any] = loaded.meta
        self._loaded = loaded  # keeps a temporary export (a checkpoint on onnxruntime) alive
        self.test_scale: tuple[int, int] | None = (
            None if test_scale is None else test_box(self.meta, test_scale)
        )
        inference.setdefault("box", self.test_scale)
        self.cfg = InferenceConfig.from_mode(
            mode, mean=tuple(self.meta["mean"]), std=tuple(self.meta["std"]), **inference
        )
        self.cfg.warn_if_slide_is_whole()
        require_logits(loaded.net, self.cfg, checkpoint if isinstance(checkpoint, (str, Path)) else None)
        self.fast = fast
        self.net: Net = loaded.net
        self.path_name = "fp32 eager" if loaded.name == PLAIN else loaded.name

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.meta["palette"]]

    def _prepare(self, image: ImageLike) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor]:
        """(the normalised, test-scale-resized batch on the device, the image's own (H, W), the original
        RGB uint8 image as a (1, H, W, 3) tensor for ms+flip)."""
        rgb = read_rgb(image) if isinstance(image, (str, Path)) else _as_rgb(image)
        if takes_uint8(self.net) and not self.cfg.is_multi_pass:
            # A graph that normalises inside gets the (resized) pixels themselves: no normalise and undo.
            x = resized_pixels(rgb, self.test_scale).to(self.device)
        else:
            x = preprocess(rgb, self.test_scale, self.meta["mean"], self.meta["std"]).to(self.device)
        return x, (int(rgb.shape[0]), int(rgb.shape[1])), torch.from_numpy(rgb)[None]

    def scores(self, image: ImageLike) -> torch.Tensor:
        """Class scores (1, C, H, W) at the image's size: logits (one pass) or mean probabilities."""
        x, size, original = self._prepare(image)
        return segment(self.net, x, size, self.cfg, original)

    def __call__(self, image: ImageLike) -> np.ndarray:
        """The train-id map (H, W) uint8 of an RGB uint8 array or an image path.

        Goes through `predict_labels`; with `fast=True` its exact cheap upsample + argmax is used
        where it applies (one whole-image pass at the image's own size).
        """
        x, size, original = self._prepare(image)
        labels = predict_labels(self.net, x, size, self.cfg, fast_argmax=self.fast, original=original)
        return labels[0].to(torch.uint8).cpu().numpy()

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """The official-palette RGB picture of a train-id map."""
        return colorize(mask, self.palette)

    def overlay(self, image: ImageLike, mask: np.ndarray, opacity: float = 0.5) -> np.ndarray:
        rgb = read_rgb(image) if isinstance(image, (str, Path)) else _as_rgb(image)
        return overlay(rgb, mask, opacity, self.palette)
