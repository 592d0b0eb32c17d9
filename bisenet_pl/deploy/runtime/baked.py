"""Baked graphs at run time: `BakedNet` runs a file that takes uint8 pixels and/or returns labels, as
the inference modes call any net, and `adapt` picks it for a file whose meta says so.

The graph surgery and the export check live in `deploy.export.bake`; what a file takes and gives is the
`GraphContract` (`deploy.contract`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bisenet_pl.data.preprocess import MEAN, STD, denormalize, keep_ratio_size, preprocess, resize_image
from bisenet_pl.deploy.contract import ExportError, GraphContract
from bisenet_pl.deploy.runtime.onnxruntime import OnnxNet


class BakedNet:
    """A baked ONNX file in ONNX Runtime, callable as the inference modes call a net.

    `__call__(x)` takes what the modes hand over, a normalised float (N, 3, H, W) batch, or (from
    `Predictor`, which holds the image) the uint8 RGB image itself as an (N, 3, H, W) uint8 tensor. A
    preprocess graph is fed uint8: the original pixels where given, else `denormalize(x)`, which is exact
    here, because every tensor the modes build is `normalize` of a uint8 image (resized, cropped or
    flipped as uint8 first), and float32 keeps (x - mean) / std far within the half grey level that the
    rounding undoes. It returns logits (N, C, H, W), or, for an argmax graph, its labels one-hot as
    float scores, so `segment(...).argmax(1)` is the graph's labels; a resize of those scores to another
    size (a test-scale resize undone) is bilinear on the one-hot maps: each pixel takes the class with the
    most weight among its four source pixels. Multi-pass modes need logits (`require_logits`).

    `native(array)` runs the graph on exactly what it takes (a numpy array of its dtype and layout) and
    returns what it gives; a wrong dtype or shape is one readable `ExportError`.
    """

    def __init__(self, onnx_net: OnnxNet, contract: GraphContract) -> None:
        self.onnx_net = onnx_net
        self.contract = contract
        self.meta = onnx_net.meta
        self.path = onnx_net.path
        self.num_classes = onnx_net.num_classes
        self.device = onnx_net.device
        self.mean = tuple(float(v) for v in self.meta.get("mean", MEAN))
        self.std = tuple(float(v) for v in self.meta.get("std", STD))
        outputs = [o.name for o in onnx_net.session.get_outputs()]
        self.output_name = contract.output_name if contract.output_name in outputs else outputs[0]
        parts = ["uint8 in" if contract.preprocess else "float in", contract.layout]
        parts.append("labels out" if contract.argmax else "logits out")
        self.name = f"onnxruntime fp32 (fused, baked: {', '.join(parts)})"

    @property
    def takes_uint8(self) -> bool:
        return self.contract.preprocess

    @property
    def returns_labels(self) -> bool:
        return self.contract.argmax

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "the ONNX model"

    def native(self, array: np.ndarray) -> np.ndarray:
        """The graph's own output for its own input (dtype and layout of the contract)."""
        expected = np.dtype(self.contract.input_dtype)
        channels = 3 if self.contract.layout == "nhwc" else 1
        if (
            not isinstance(array, np.ndarray)
            or array.dtype != expected
            or array.ndim != 4
            or array.shape[channels] != 3
        ):
            got = (
                f"{array.dtype} {tuple(array.shape)}"
                if isinstance(array, np.ndarray)
                else type(array).__name__
            )
            raise ExportError(
                f"{self._where()} takes {self.contract.describe(self.num_classes)['input']}; got {got}"
            )
        try:
            (out,) = self.onnx_net.session.run(
                [self.output_name], {self.onnx_net.input_name: np.ascontiguousarray(array)}
            )
        except Exception as e:  # onnxruntime's own error types
            raise ExportError(f"{self._where()}: ONNX Runtime failed: {str(e).splitlines()[0]}") from None
        return out

    def _graph_input(self, x: torch.Tensor) -> np.ndarray:
        """`x` (normalised float or uint8, NCHW) as the graph's input array."""
        if self.contract.preprocess:
            if x.dtype == torch.uint8:
                nhwc = x.detach().cpu().permute(0, 2, 3, 1).numpy()
            else:
                nhwc = denormalize(x, self.mean, self.std)
            return np.ascontiguousarray(
                nhwc if self.contract.layout == "nhwc" else nhwc.transpose(0, 3, 1, 2)
            )
        if x.dtype == torch.uint8:
            x = preprocess_batch(x, self.mean, self.std)
        array = x.detach().to("cpu", torch.float32)
        if self.contract.layout == "nhwc":
            array = array.permute(0, 2, 3, 1)
        return np.ascontiguousarray(array.numpy())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.from_numpy(self.native(self._graph_input(x)))
        if self.contract.argmax:
            out = F.one_hot(out.long(), self.num_classes).permute(0, 3, 1, 2).float()
        return out.to(x.device)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, W) int64 labels at x's size: an argmax graph's own, else the argmax of the logits."""
        if self.contract.argmax:
            return torch.from_numpy(self.native(self._graph_input(x))).long().to(x.device)
        return self(x).argmax(1)


def resized_pixels(rgb: np.ndarray, box: Sequence[int] | None) -> torch.Tensor:
    """`preprocess`'s keep-ratio resize alone: the uint8 (1, 3, H', W') batch a preprocess graph takes."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if box is not None:
        rgb = resize_image(rgb, keep_ratio_size(rgb.shape[0], rgb.shape[1], box))
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


def preprocess_batch(rgb: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """A uint8 (N, 3, H, W) batch normalised as `preprocess` does (no resize)."""
    images = [
        preprocess(np.ascontiguousarray(im.permute(1, 2, 0).cpu().numpy()), None, mean, std) for im in rgb
    ]
    return torch.cat(images)


def adapt(onnx_net: OnnxNet) -> OnnxNet | BakedNet:
    """`onnx_net` itself for a plain export, else the `BakedNet` its meta's contract calls for."""
    contract = GraphContract.from_meta(onnx_net.meta)
    return onnx_net if contract.is_plain else BakedNet(onnx_net, contract)


__all__ = ["BakedNet", "adapt", "preprocess_batch", "resized_pixels"]
