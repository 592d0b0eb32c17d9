"""Graphs that need nothing around them: uint8 RGB in, normalised inside, class map out.

`python -m bisenet_pl.export ckpt=... out=m.onnx preprocess=true argmax=true [layout=nhwc|nchw]` bakes
into the ONNX graph what a deployment would otherwise write itself:

- `preprocess=true`: the input is the uint8 RGB image, (N, H, W, 3) for `layout=nhwc` (the default with
  preprocess: what an image decoder gives) or (N, 3, H, W) for `layout=nchw`; the graph casts it to
  float32 and normalises it with the checkpoint's mean/std, the same arithmetic as
  `bisenet_pl.data.preprocess.normalize` (subtract the mean, multiply by 1/std). There is no resize
  inside: the caller feeds the image at the size it wants segmented.
- `argmax=true`: the output is the class map (N, H, W) uint8 at the input size, the argmax over classes
  of the upsampled logits (ONNX ArgMax keeps the first maximum, as torch's argmax does).

`GraphContract` is which of these a file has; it is written into the sidecar JSON and the embedded
metadata (key `graph`), and everything that opens an `.onnx` file reads it back (`adapt`), so a baked
file runs wherever a plain one does. `check_baked` is the export's check for such files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bisenet_pl.data.preprocess import MEAN, STD, denormalize, keep_ratio_size, preprocess, resize_image
from bisenet_pl.errors import ConfigError
from bisenet_pl.inference.onnx import FP32_TOLERANCE, INPUT_NAME, OUTPUT_NAME, ExportError, OnnxNet

if TYPE_CHECKING:
    from bisenet_pl.inference.modes import InferenceConfig
    from bisenet_pl.models.segmentor import Segmentor

log = logging.getLogger(__name__)

LAYOUTS = ("nhwc", "nchw")
LABELS_NAME = "labels"
#: An argmax graph's labels must agree with PyTorch's on at least this share of pixels...
MIN_LABEL_AGREEMENT = 0.9999
#: ...and exactly wherever PyTorch's top-2 logit margin exceeds this (elsewhere float rounding decides).
LABEL_MARGIN = 1e-4


@dataclass(frozen=True)
class GraphContract:
    """What an exported graph takes and gives. The default is the plain export: normalised float32
    (N, 3, H, W) in, float32 logits (N, C, H, W) out."""

    preprocess: bool = False
    argmax: bool = False
    layout: str = "nchw"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout={self.layout!r}: choose one of {', '.join(LAYOUTS)}")

    @classmethod
    def from_options(cls, preprocess: bool, argmax: bool, layout: str | None = None) -> GraphContract:
        """The export options; `layout=None` is nhwc with preprocess (a decoded image's layout), else nchw."""
        chosen = layout or ("nhwc" if preprocess else "nchw")
        return cls(bool(preprocess), bool(argmax), str(chosen).lower())

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> GraphContract:
        """The contract a file's meta records; files without a `graph` entry are plain exports."""
        graph = meta.get("graph") or {}
        return cls(
            preprocess=bool(graph.get("normalised_inside", False)),
            argmax=graph.get("output", "logits") == "labels",
            layout=str(graph.get("input_layout", "nchw")),
        )

    @property
    def is_plain(self) -> bool:
        return self == GraphContract()

    @property
    def input_dtype(self) -> str:
        return "uint8" if self.preprocess else "float32"

    @property
    def output_name(self) -> str:
        return LABELS_NAME if self.argmax else OUTPUT_NAME

    def input_dims(self) -> list[str | int]:
        """The input's dims as the file names them (the channel count is static)."""
        return ["batch", "height", "width", 3] if self.layout == "nhwc" else ["batch", 3, "height", "width"]

    def output_dims(self, num_classes: int) -> list[str | int]:
        return ["batch", "height", "width"] if self.argmax else ["batch", num_classes, "height", "width"]

    def describe(self, num_classes: int) -> dict[str, Any]:
        """The meta entries that say what the file takes and gives (readable strings and `graph`)."""
        shape = "(N, H, W, 3)" if self.layout == "nhwc" else "(N, 3, H, W)"
        if self.preprocess:
            inp = f"{INPUT_NAME}: {shape} uint8 RGB, normalised inside with mean/std (no resize inside)"
        else:
            inp = f"{INPUT_NAME}: {shape} float32, RGB, normalised (x - mean) / std"
        if self.argmax:
            out = f"{LABELS_NAME}: (N, H, W) uint8 class ids at the input size (argmax of the logits)"
        else:
            out = f"{OUTPUT_NAME}: (N, {num_classes}, H, W) float32 at the input size"
        graph = {
            "input_dtype": self.input_dtype,
            "input_layout": self.layout,
            "normalised_inside": self.preprocess,
            "output": "labels" if self.argmax else "logits",
        }
        return {"input": inp, "output": out, "graph": graph}

    def wrap(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
        """The module to export: `net` itself for the plain contract, else `net` inside `BakedGraph`."""
        if self.is_plain:
            return net
        num_classes = int(getattr(net, "num_classes", 19))
        if self.argmax and num_classes > 256:
            raise ExportError(
                f"argmax=true writes uint8 labels: at most 256 classes, this model has {num_classes}"
            )
        return BakedGraph(net, self, mean, std)

    def example(self, size: Sequence[int]) -> torch.Tensor:
        """A zero input of this contract's dtype and layout at (H, W) `size`, batch 1 (for the exporter)."""
        h, w = int(size[0]), int(size[1])
        shape = (1, h, w, 3) if self.layout == "nhwc" else (1, 3, h, w)
        return torch.zeros(shape, dtype=torch.uint8 if self.preprocess else torch.float32)


class BakedGraph(nn.Module):
    """`net` (logits at the input size from a normalised NCHW batch) with the contract's layout change,
    normalisation and argmax around it: the module `export_onnx` traces for a baked contract."""

    def __init__(
        self, net: nn.Module, contract: GraphContract, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.net = net
        self.contract = contract
        # Constants of the graph: buffers, so they are exported as initialisers, not as inputs.
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1))
        self.register_buffer(
            "inv_std",
            (1.0 / torch.tensor([float(s) for s in std], dtype=torch.float64)).float().view(1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.contract.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        if self.contract.preprocess:
            # normalize()'s two steps, in its order: subtract the mean, then multiply by 1/std.
            x = (x.float() - self.mean) * self.inv_std  # type: ignore[operator]
        logits = self.net(x)
        if self.contract.argmax:
            return logits.argmax(dim=1).to(torch.uint8)
        return logits


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


def returns_labels(net: Any) -> bool:
    return bool(getattr(net, "returns_labels", False))


def require_logits(net: Any, cfg: InferenceConfig, source: Any = None) -> None:
    """One readable error when a labels graph meets a mode that averages logits or probabilities."""
    if not returns_labels(net) or (cfg.mode == "whole" and not cfg.is_multi_pass):
        return
    mode = "slide" if cfg.mode == "slide" else "ms+flip"
    where = source or getattr(net, "path", None) or "this ONNX file"
    raise ConfigError(
        f"{where} was exported with argmax=true: it returns class labels, and mode={mode} averages logits "
        f"over {'windows' if mode == 'slide' else 'scales and flips'}. Use mode=whole, or export without "
        "argmax=true for this mode."
    )


def _check_inputs(shapes: Sequence[Sequence[int]], seed: int) -> list[np.ndarray]:
    """Random uint8 RGB images (N, H, W, 3), one batch per (N, _, H, W) check shape."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(int(s[0]), int(s[-2]), int(s[-1]), 3), dtype=np.uint8) for s in shapes]


def check_baked(
    path: str | Path,
    model: Segmentor,
    shapes: Sequence[Sequence[int]],
    tolerance: float = FP32_TOLERANCE,
    seed: int = 0,
) -> list[float]:
    """The export check of a baked file against the unfused PyTorch model fed the same uint8 images
    through `bisenet_pl.data.preprocess` (check shapes are (N, 3, H, W), as for plain files).

    Logits graphs: max abs logit difference <= `tolerance`. Labels graphs: agreement >= 99.99 % of
    pixels, and equal wherever PyTorch's top-2 margin exceeds `LABEL_MARGIN`. Returns, per shape, the
    max abs difference (logits) or the share of differing pixels (labels); raises `ExportError` naming
    the shape and the numbers otherwise.
    """
    net = adapt(OnnxNet(path, device="cpu"))
    if not isinstance(net, BakedNet):
        raise ExportError(f"{path}: not a baked graph (no preprocess/argmax in its meta)")
    contract = net.contract
    reference = model.inference_copy(fuse=False).float().cpu()
    results = []
    for shape, rgb in zip(shapes, _check_inputs(shapes, seed), strict=True):
        x = torch.cat([preprocess(im, None, net.mean, net.std) for im in rgb])
        with torch.no_grad():
            ref = reference(x)
        feed = rgb if contract.layout == "nhwc" else np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))
        if not contract.preprocess:
            feed = x.permute(0, 2, 3, 1).numpy() if contract.layout == "nhwc" else x.numpy()
        out = torch.from_numpy(net.native(np.ascontiguousarray(feed)))
        shape_str = "x".join(str(int(v)) for v in (shape[0], shape[-2], shape[-1]))
        expected = tuple(ref.argmax(1).shape) if contract.argmax else tuple(ref.shape)
        if tuple(out.shape) != expected:
            raise ExportError(f"{path}: a {shape_str} input gave {tuple(out.shape)}, PyTorch {expected}")
        if contract.argmax:
            results.append(_check_labels(path, out, ref, shape_str))
        else:
            diff = float((out - ref).abs().max())
            results.append(diff)
            print(
                f"check {shape_str} {contract.input_dtype}: max |onnxruntime - pytorch| = {diff:.3g} "
                f"(tolerance {tolerance:g})"
            )
            if not diff <= tolerance:
                raise ExportError(
                    f"{path}: ONNX Runtime and PyTorch differ on a {shape_str} {contract.input_dtype} input: "
                    f"max abs logit difference {diff:.3g} > tolerance {tolerance:g}. The exported file is "
                    "wrong; not using it."
                )
    return results


def _check_labels(path: str | Path, labels: torch.Tensor, ref: torch.Tensor, shape_str: str) -> float:
    """The labels gate of `check_baked`; returns the share of pixels that differ."""
    ref_labels = ref.argmax(1)
    top2 = ref.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    differ = labels.long() != ref_labels
    share = float(differ.float().mean())
    confident = int((differ & (margin > LABEL_MARGIN)).sum())
    print(
        f"check {shape_str} labels: {100 * (1 - share):.4f} % equal to PyTorch's argmax, {confident} "
        f"differing pixels with a top-2 margin > {LABEL_MARGIN:g}"
    )
    if share > 1 - MIN_LABEL_AGREEMENT or confident:
        raise ExportError(
            f"{path}: ONNX Runtime's labels differ from PyTorch's argmax on a {shape_str} input: "
            f"{100 * (1 - share):.4f} % equal (need >= {100 * MIN_LABEL_AGREEMENT:.2f} %), {confident} "
            f"differing pixels where the top-2 logit margin exceeds {LABEL_MARGIN:g} (need 0). The exported "
            "file is wrong; not using it."
        )
    return share


__all__ = [
    "LAYOUTS",
    "BakedGraph",
    "BakedNet",
    "GraphContract",
    "adapt",
    "check_baked",
    "require_logits",
    "returns_labels",
]
