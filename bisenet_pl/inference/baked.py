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

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from bisenet_pl.data.preprocess import MEAN, STD, denormalize, keep_ratio_size, preprocess, resize_image
from bisenet_pl.errors import ConfigError
from bisenet_pl.inference.onnx import FP32_TOLERANCE, INPUT_NAME, OUTPUT_NAME, ExportError, OnnxNet

if TYPE_CHECKING:
    from bisenet_pl.inference.modes import InferenceConfig, Net
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


#: Names of the tensors baking adds (prefixed, so they cannot meet an exporter's own names).
_PREFIX = "bake_"


def bake(proto: Any, contract: GraphContract, mean: Sequence[float], std: Sequence[float]) -> Any:
    """The contract's layout change, normalisation and argmax around a plain graph, in place.

    `proto` is a plain export (input `image`: normalised float32 NCHW; output `logits` at the input
    size), fp32 or INT8 (QDQ) alike, so one mechanism bakes every ONNX file we write. Added nodes:
    Transpose (nhwc), Cast to float32, Sub mean, Mul 1/std (`bisenet_pl.data.preprocess.normalize`'s
    float32 steps in its order: the graph sees the same floats), and ArgMax over classes (first maximum,
    as torch) with a Cast to uint8.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    (inp,), (out,) = list(graph.input), list(graph.output)
    if (inp.name, out.name) != (INPUT_NAME, OUTPUT_NAME):
        raise ExportError(f"only a plain export can be baked (input {INPUT_NAME!r}, output {OUTPUT_NAME!r})")
    num_classes = out.type.tensor_type.shape.dim[1].dim_value
    if contract.argmax and num_classes > 256:
        raise ExportError(
            f"argmax=true writes uint8 labels: at most 256 classes, this model has {num_classes}"
        )
    inner = _PREFIX + "normalised"
    for node in graph.node:
        node.input[:] = [inner if name == INPUT_NAME else name for name in node.input]
    before: list[Any] = []
    current = INPUT_NAME
    if contract.layout == "nhwc":
        before.append(helper.make_node("Transpose", [current], [_PREFIX + "nchw"], perm=[0, 3, 1, 2]))
        current = _PREFIX + "nchw"
    if contract.preprocess:
        mean32 = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        inv_std32 = (1.0 / np.asarray(std, np.float64)).astype(np.float32).reshape(1, 3, 1, 1)
        graph.initializer.extend(
            [
                numpy_helper.from_array(mean32, _PREFIX + "mean"),
                numpy_helper.from_array(inv_std32, _PREFIX + "inv_std"),
            ]
        )
        before += [
            helper.make_node("Cast", [current], [_PREFIX + "float"], to=TensorProto.FLOAT),
            helper.make_node("Sub", [_PREFIX + "float", _PREFIX + "mean"], [_PREFIX + "centred"]),
            helper.make_node("Mul", [_PREFIX + "centred", _PREFIX + "inv_std"], [inner]),
        ]
    elif before:
        before[-1].output[:] = [inner]
    else:
        before.append(helper.make_node("Identity", [current], [inner]))
    after: list[Any] = []
    if contract.argmax:
        after = [
            helper.make_node("ArgMax", [OUTPUT_NAME], [_PREFIX + "labels64"], axis=1, keepdims=0),
            helper.make_node("Cast", [_PREFIX + "labels64"], [LABELS_NAME], to=TensorProto.UINT8),
        ]
    nodes = [*before, *graph.node, *after]
    del graph.node[:]
    graph.node.extend(nodes)
    dtype = TensorProto.UINT8 if contract.preprocess else TensorProto.FLOAT
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, dtype, contract.input_dims()))
    if contract.argmax:
        del graph.output[:]
        graph.output.append(
            helper.make_tensor_value_info(LABELS_NAME, TensorProto.UINT8, contract.output_dims(num_classes))
        )
    return proto


def bake_file(src: str | Path, out: str | Path, contract: GraphContract) -> Path:
    """`src` (a plain `.onnx` export, fp32 or INT8) baked into `out` (may be `src`): the graph, its
    embedded meta and its sidecar say the new contract."""
    import onnx

    from bisenet_pl.inference.onnx import META_KEY, sidecar_path

    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = dict(json.loads(props.get(META_KEY, "{}")))
    bake(proto, contract, meta.get("mean", MEAN), meta.get("std", STD))
    meta.update(contract.describe(int(meta.get("num_classes", 19))))
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.checker.check_model(proto)
    out = Path(out)
    onnx.save(proto, str(out))
    sidecar_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    return out


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
    model: Segmentor | Net,
    shapes: Sequence[Sequence[int]],
    tolerance: float = FP32_TOLERANCE,
    seed: int = 0,
    reference_name: str = "PyTorch",
) -> list[float]:
    """The export check of a baked file against the unfused PyTorch model fed the same uint8 images
    through `bisenet_pl.data.preprocess` (check shapes are (N, 3, H, W), as for plain files). `model`
    may instead be any net of normalised images (an INT8 file before baking: its baked copy must give
    its answers, not fp32's).

    Logits graphs: max abs logit difference <= `tolerance`. Labels graphs: agreement >= 99.99 % of
    pixels, and equal wherever PyTorch's top-2 margin exceeds `LABEL_MARGIN`. Returns, per shape, the
    max abs difference (logits) or the share of differing pixels (labels); raises `ExportError` naming
    the shape and the numbers otherwise.
    """
    net = adapt(OnnxNet(path, device="cpu"))
    if not isinstance(net, BakedNet):
        raise ExportError(f"{path}: not a baked graph (no preprocess/argmax in its meta)")
    contract = net.contract
    copy = getattr(model, "inference_copy", None)
    reference = copy(fuse=False).float().cpu() if callable(copy) else model
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
            results.append(_check_labels(path, out, ref, shape_str, reference_name))
        else:
            diff = float((out - ref).abs().max())
            results.append(diff)
            print(
                f"check {shape_str} {contract.input_dtype}: max |onnxruntime - {reference_name}| = "
                f"{diff:.3g} (tolerance {tolerance:g})"
            )
            if not diff <= tolerance:
                raise ExportError(
                    f"{path}: ONNX Runtime and {reference_name} differ on a {shape_str} "
                    f"{contract.input_dtype} input: max abs logit difference {diff:.3g} > tolerance "
                    f"{tolerance:g}. The exported file is wrong; not using it."
                )
    return results


def _check_labels(
    path: str | Path, labels: torch.Tensor, ref: torch.Tensor, shape_str: str, reference_name: str
) -> float:
    """The labels gate of `check_baked`; returns the share of pixels that differ."""
    ref_labels = ref.argmax(1)
    top2 = ref.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    differ = labels.long() != ref_labels
    share = float(differ.float().mean())
    confident = int((differ & (margin > LABEL_MARGIN)).sum())
    print(
        f"check {shape_str} labels: {100 * (1 - share):.4f} % equal to {reference_name}'s argmax, "
        f"{confident} differing pixels with a top-2 margin > {LABEL_MARGIN:g}"
    )
    if share > 1 - MIN_LABEL_AGREEMENT or confident:
        raise ExportError(
            f"{path}: ONNX Runtime's labels differ from {reference_name}'s argmax on a {shape_str} input: "
            f"{100 * (1 - share):.4f} % equal (need >= {100 * MIN_LABEL_AGREEMENT:.2f} %), {confident} "
            f"differing pixels where the top-2 logit margin exceeds {LABEL_MARGIN:g} (need 0). The exported "
            "file is wrong; not using it."
        )
    return share


def bake_in_place(path: str | Path, contract: GraphContract, shapes: Sequence[Sequence[int]]) -> list[float]:
    """Bake an exported file that cannot be re-made cheaply (an INT8 file, after its gate) where it
    lies, held to `check_baked` against the file itself before baking. On a failure the baked copy is
    kept beside it as `<name>.baked.failed` and the original stays untouched."""
    path = Path(path)
    from bisenet_pl.inference.onnx import sidecar_path

    trial = path.with_name(path.name + ".baking.onnx")
    try:
        bake_file(path, trial, contract)
        diffs = check_baked(trial, OnnxNet(path), shapes, reference_name="the file before baking")
    except ExportError:
        if trial.exists():
            trial.replace(path.with_name(path.name + ".baked.failed"))
        sidecar_path(trial).unlink(missing_ok=True)
        raise
    trial.replace(path)
    sidecar_path(trial).replace(sidecar_path(path))
    return diffs


__all__ = [
    "LAYOUTS",
    "bake",
    "bake_file",
    "bake_in_place",
    "BakedNet",
    "GraphContract",
    "adapt",
    "check_baked",
    "require_logits",
    "returns_labels",
]
