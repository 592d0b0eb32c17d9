"""Baking: the uint8-in / labels-out steps added around an exported graph, and the check a baked file
must pass before anyone uses it.

`python -m bisenet_pl.export ... preprocess=true argmax=true [layout=nhwc|nchw]` bakes into the ONNX
graph what a deployment would otherwise write itself: `preprocess=true` takes the uint8 RGB image and
normalises it inside with the checkpoint's mean/std, in the float32 steps of
`bisenet_pl.data.preprocess.normalize` (no resize inside); `argmax=true` returns the (N, H, W) uint8
class map at the input size (ONNX ArgMax keeps the first maximum, as torch's argmax does). What a file
takes and gives is its `GraphContract`, recorded in its meta; `deploy.runtime.baked` runs such files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bisenet_pl.data.preprocess import MEAN, STD, preprocess
from bisenet_pl.deploy import contract as agreed  # the module; `contract` is a GraphContract here
from bisenet_pl.deploy.contract import (
    INPUT_NAME,
    LABEL_MARGIN,
    LABELS_NAME,
    OUTPUT_NAME,
    ExportError,
    GraphContract,
)
from bisenet_pl.deploy.runtime.baked import BakedNet, adapt
from bisenet_pl.deploy.runtime.onnxruntime import OnnxNet

if TYPE_CHECKING:
    from bisenet_pl.deploy.runtime.base import Net
    from bisenet_pl.models.segmentor import Segmentor

log = logging.getLogger(__name__)

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

    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = dict(json.loads(props.get(agreed.META_KEY, "{}")))
    bake(proto, contract, meta.get("mean", MEAN), meta.get("std", STD))
    meta.update(contract.describe(int(meta.get("num_classes", 19))))
    agreed.embed_meta(proto, meta)
    onnx.checker.check_model(proto)
    out = Path(out)
    onnx.save(proto, str(out))
    agreed.sidecar_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _check_inputs(shapes: Sequence[Sequence[int]], seed: int) -> list[np.ndarray]:
    """Random uint8 RGB images (N, H, W, 3), one batch per (N, _, H, W) check shape."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(int(s[0]), int(s[-2]), int(s[-1]), 3), dtype=np.uint8) for s in shapes]


def check_baked(
    path: str | Path,
    model: Segmentor | Net,
    shapes: Sequence[Sequence[int]],
    tolerance: float = agreed.FP32_TOLERANCE,
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
            log.info(
                "check %s %s: max |onnxruntime - %s| = %.3g (tolerance %g)",
                shape_str,
                contract.input_dtype,
                reference_name,
                diff,
                tolerance,
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
    log.info(
        "check %s labels: %.4f %% equal to %s's argmax, %d differing pixels with a top-2 margin > %g",
        shape_str,
        100 * (1 - share),
        reference_name,
        confident,
        LABEL_MARGIN,
    )
    if share > 1 - agreed.MIN_LABEL_AGREEMENT or confident:
        raise ExportError(
            f"{path}: ONNX Runtime's labels differ from {reference_name}'s argmax on a {shape_str} input: "
            f"{100 * (1 - share):.4f} % equal (need >= {100 * agreed.MIN_LABEL_AGREEMENT:.2f} %), "
            f"{confident} "
            f"differing pixels where the top-2 logit margin exceeds {LABEL_MARGIN:g} (need 0). The exported "
            "file is wrong; not using it."
        )
    return share


def bake_in_place(path: str | Path, contract: GraphContract, shapes: Sequence[Sequence[int]]) -> list[float]:
    """Bake an exported file that cannot be re-made cheaply (an INT8 file, after its gate) where it
    lies, held to `check_baked` against the file itself before baking. On a failure the baked copy is
    kept beside it as `<name>.baked.failed` and the original stays untouched."""
    path = Path(path)
    trial = path.with_name(path.name + ".baking.onnx")
    try:
        bake_file(path, trial, contract)
        diffs = check_baked(trial, OnnxNet(path), shapes, reference_name="the file before baking")
    except ExportError:
        if trial.exists():
            trial.replace(path.with_name(path.name + ".baked.failed"))
        agreed.sidecar_path(trial).unlink(missing_ok=True)
        raise
    trial.replace(path)
    agreed.sidecar_path(trial).replace(agreed.sidecar_path(path))
    return diffs


__all__ = ["bake", "bake_file", "bake_in_place", "check_baked"]
