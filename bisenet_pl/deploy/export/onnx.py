"""ONNX export: a Segmentor to one self-contained file (+ sidecar JSON), and the fp32 check against PyTorch.

The exported graph is the fused (BN folded) fp32 model in eval mode, aux heads dropped:

- input `image`: (N, 3, H, W) float32, RGB normalised with the checkpoint's mean/std (the test
  pipeline's output); N, H and W are dynamic;
- output `logits`: (N, num_classes, H, W) float32 at the input size (the decode head's 1/8 logits
  resized bilinearly, align_corners=False, as `Segmentor.forward` does in eval mode).

The meta that inference needs (classes, palette, mean, std, test scale) is stored twice: in the model's
`metadata_props`, so the file alone suffices, and in a readable sidecar JSON `<out>.json`.

Exporters: `dynamo` (torch.export + onnxscript, torch's supported path; seconds) or `torchscript` (the
legacy tracer: under a second, deprecated by torch but still shipped). Same graph semantics.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bisenet_pl.deploy.contract import (
    FP32_TOLERANCE,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    GraphContract,
    embed_meta,
    sidecar_path,
)
from bisenet_pl.deploy.runtime.onnxruntime import LowResOnnxNet, OnnxNet

if TYPE_CHECKING:
    from bisenet_pl.models.segmentor import Segmentor

log = logging.getLogger(__name__)

DEFAULT_CHECK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 512, 1024), (2, 3, 360, 648))
EXPORTERS = ("dynamo", "torchscript")


class _LowResLogits(nn.Module):
    """`forward` = the wrapped Segmentor's `forward_logits` (1/8 logits): the graph the fast path runs."""

    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_logits(x)


def _torch_onnx_export(
    net: nn.Module, target: str | io.BytesIO, exporter: str, opset: int | None, example: torch.Tensor
) -> None:
    """Run one of torch's exporters with our names and dynamic (batch, height, width)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning, tracer warnings
        if exporter == "dynamo":
            from torch.export import Dim

            assert isinstance(target, str), "the in-memory export (a BytesIO) uses the TorchScript exporter"

            torch.onnx.export(
                net,
                (example,),
                target,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},),
                opset_version=opset,
                dynamo=True,
                external_data=False,  # one file: weights inside (13 MB), no model.onnx.data
                verbose=False,
            )
        else:
            dyn = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                net,
                (example,),
                # The TorchScript exporter writes to a file object too; torch annotates `f` as a path only.
                target,  # type: ignore[arg-type]
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: dyn, OUTPUT_NAME: dyn},
                opset_version=opset or 17,
                dynamo=False,
            )


def _name_dims(path: Path, dims_by_name: dict[str, Sequence[str | int]], meta: dict[str, Any]) -> None:
    """Readable dynamic-dim names (batch/height/width), the static channel and class counts (the dims of
    each named input/output in `dims_by_name`), and the meta, in place.

    The exporters name dynamic dims themselves (`s77`, `Resizelogits_dim_1`...); fixed names make the
    contract visible to any ONNX tool (Netron, onnxruntime's `get_inputs()`).
    """
    import onnx

    proto = onnx.load(str(path))
    for value in (*proto.graph.input, *proto.graph.output):
        if value.name not in dims_by_name:
            continue
        dims = value.type.tensor_type.shape.dim
        for i, wanted in enumerate(dims_by_name[value.name]):
            if isinstance(wanted, str):
                dims[i].ClearField("dim_value")
                dims[i].dim_param = wanted
            else:
                dims[i].ClearField("dim_param")
                dims[i].dim_value = int(wanted)
    embed_meta(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def opset_of(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def export_onnx(
    model: Segmentor,
    out: str | Path,
    meta: dict[str, Any] | None = None,
    exporter: str = "dynamo",
    opset: int | None = None,
    example_size: Sequence[int] = (256, 512),
    contract: GraphContract | None = None,
) -> Path:
    """Write `model` (a Segmentor; fused on a copy) to `out` as one self-contained ONNX file + sidecar.

    Returns the ONNX path. `meta` (classes, palette, mean, std, test_scale...) goes into the file's
    metadata and the sidecar JSON. `opset` defaults to the exporter's (18 dynamo, 17 torchscript).
    `contract`: a baked graph (uint8 in and/or labels out): the plain graph, then
    `deploy.export.bake.bake_file` around it; None is the plain graph described above.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    from bisenet_pl.checkpoints.meta import complete_meta
    from bisenet_pl.deploy.export.bake import bake_file

    plain = GraphContract()

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = model.inference_copy(fuse=True).float().cpu()
    num_classes = int(net.num_classes)
    full_meta = complete_meta(num_classes, meta)
    full_meta.update(
        {
            "num_classes": num_classes,
            "input": f"{INPUT_NAME}: (N, 3, H, W) float32, RGB, normalised (x - mean) / std",
            "output": f"{OUTPUT_NAME}: (N, {num_classes}, H, W) float32 at the input size",
            **plain.describe(num_classes),
            "fused": True,
            "exporter": exporter,
            "torch": torch.__version__,
        }
    )
    example = torch.zeros(1, 3, int(example_size[0]), int(example_size[1]))
    _torch_onnx_export(net, str(out), exporter, opset, example)
    stray = out.with_name(out.name + ".data")
    if stray.exists():  # never leave a second file that the .onnx silently depends on
        raise ExportError(
            f"{out}: the exporter wrote external weights to {stray}; expected one self-contained file"
        )
    full_meta["opset"] = opset_of(out)
    _name_dims(out, {INPUT_NAME: plain.input_dims(), OUTPUT_NAME: plain.output_dims(num_classes)}, full_meta)
    sidecar_path(out).write_text(json.dumps(full_meta, indent=2) + "\n")
    if contract is not None and not contract.is_plain:
        bake_file(out, out, contract)
    return out


def low_res_onnx_net(model: Segmentor, threads: int | None = None) -> LowResOnnxNet:
    """The fused fp32 model's 1/8 logits in ONNX Runtime (CPU), upsampled in torch.

    Why: on CPUs like this project's, ONNX Runtime's fp32 convolutions (MLAS, NCHWc blocked layout,
    conv+ReLU fused) run BiSeNetV2 faster than PyTorch's oneDNN path, with the same logits to ~1e-5.
    Exported in memory with the TorchScript exporter (about a second).
    """
    net = model.inference_copy(fuse=True).float().cpu()
    buffer = io.BytesIO()
    _torch_onnx_export(_LowResLogits(net), buffer, "torchscript", 17, torch.zeros(1, 3, 64, 128))
    ort_net = LowResOnnxNet(buffer.getvalue(), device="cpu", threads=threads)
    ort_net.align_corners = bool(getattr(model, "align_corners", False))
    ort_net.num_classes = int(getattr(model, "num_classes", ort_net.num_classes))
    ort_net.meta = dict(getattr(model, "meta", None) or {})
    return ort_net


def move_aside(paths: Sequence[Path]) -> list[Path]:
    """Files that failed their check, each renamed `<name>.failed`: kept for inspection, never left under
    the name the user asked for. Returns the new paths (of those that existed)."""
    moved = []
    for path in paths:
        if path.exists():
            failed = path.with_name(path.name + ".failed")
            path.replace(failed)
            log.error("moved the failing export to %s", failed)
            moved.append(failed)
    return moved


def write_checked_onnx(
    model: Segmentor,
    out: Path,
    meta: dict[str, Any] | None,
    exporter: str = "dynamo",
    opset: int | None = None,
    contract: GraphContract | None = None,
    shapes: Sequence[Sequence[int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = FP32_TOLERANCE,
) -> list[float]:
    """`export_onnx`, then `check_onnx` on `shapes`; a file that fails is moved aside (`move_aside`) and
    the `ExportError` raised. Returns the check's per-shape figures."""
    export_onnx(model, out, meta, exporter=exporter, opset=opset, contract=contract)
    try:
        return check_onnx(out, model, shapes, tolerance)
    except ExportError:
        move_aside([out, sidecar_path(out)])
        raise


def check_onnx(
    path: str | Path,
    model: Segmentor,
    shapes: Sequence[Sequence[int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = FP32_TOLERANCE,
    seed: int = 0,
) -> list[float]:
    """Max abs logit difference ONNX Runtime vs the (unfused) PyTorch model, per input shape.

    Raises `ExportError` (naming the shape and the difference) if a shape's output has the wrong shape
    or any logit differs by more than `tolerance`. Inputs are random normal images (what the network
    sees after normalisation); one generator seed for reproducibility. A baked graph (uint8 in and/or
    labels out) gets its own check, `deploy.export.bake.check_baked`.
    """
    from bisenet_pl.deploy.export.bake import check_baked

    onnx_net = OnnxNet(path, device="cpu")
    if not GraphContract.from_meta(onnx_net.meta).is_plain:
        return check_baked(path, model, shapes, tolerance, seed)
    return check_fp32(onnx_net, model, shapes, tolerance, seed, where=str(path), runtime="onnxruntime")


def check_fp32(
    net: Callable[[torch.Tensor], torch.Tensor],
    model: Segmentor,
    shapes: Sequence[Sequence[int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = FP32_TOLERANCE,
    seed: int = 0,
    where: str = "the exported model",
    runtime: str = "onnxruntime",
) -> list[float]:
    """The one fp32 check of every exported format (ONNX, OpenVINO IR): max abs logit difference of
    `net` (run by `runtime`) vs the unfused PyTorch model, per input shape, logged; `ExportError` above
    `tolerance` or on a wrong output shape. `where` names the file in the messages."""
    reference = model.inference_copy(fuse=False).float().cpu()
    g = torch.Generator().manual_seed(seed)
    diffs = []
    for shape in shapes:
        x = torch.randn(*[int(s) for s in shape], generator=g)
        with torch.no_grad():
            ref = reference(x)
        out = net(x)
        if out.shape != ref.shape:
            raise ExportError(
                f"{where}: input {tuple(shape)} gave logits {tuple(out.shape)}, PyTorch {tuple(ref.shape)}"
            )
        diff = float((out - ref).abs().max())
        diffs.append(diff)
        shape_str = "x".join(map(str, shape))
        log.info("check %s: max |%s - pytorch| = %.3g (tolerance %g)", shape_str, runtime, diff, tolerance)
        if not diff <= tolerance:  # also catches NaN
            raise ExportError(
                f"{where}: {runtime} and PyTorch differ on a {shape_str} input: max abs logit "
                f"difference {diff:.3g} > tolerance {tolerance:g}. The exported file is wrong; not using it."
            )
    return diffs


__all__ = [
    "DEFAULT_CHECK_SHAPES",
    "EXPORTERS",
    "check_fp32",
    "check_onnx",
    "export_onnx",
    "low_res_onnx_net",
    "move_aside",
    "opset_of",
    "write_checked_onnx",
]
