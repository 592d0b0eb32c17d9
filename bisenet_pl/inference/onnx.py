"""ONNX: export a Segmentor to one self-contained file, check it against PyTorch, and run it.

The exported graph is the fused (BN folded) fp32 model in eval mode, aux heads dropped:

- input `image`: (N, 3, H, W) float32, RGB normalised with the checkpoint's mean/std (the test
  pipeline's output); N, H and W are dynamic;
- output `logits`: (N, num_classes, H, W) float32 at the input size (the decode head's 1/8 logits
  resized bilinearly, align_corners=False, as `Segmentor.forward` does in eval mode).

The meta that inference needs (classes, palette, mean, std, test scale) is stored twice: in the model's
`metadata_props`, so the file alone suffices, and in a readable sidecar JSON `<out>.json`.

`OnnxNet` is the one ONNX Runtime wrapper: a file for `backend=onnxruntime`, or (`OnnxNet.from_model`)
an in-memory graph that ends at the 1/8 logits, which the accelerated CPU path uses so that the exact
cheap upsample + argmax still applies.

Exporters: `dynamo` (torch.export + onnxscript, torch's supported path; seconds) or `torchscript` (the
legacy tracer: under a second, deprecated by torch but still shipped). Same graph semantics.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from bisenet_pl.errors import BisenetError

if TYPE_CHECKING:
    from bisenet_pl.inference.baked import GraphContract
    from bisenet_pl.models.segmentor import Segmentor

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
META_KEY = "bisenet_pl"
DEFAULT_CHECK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 512, 1024), (2, 3, 360, 648))
EXPORTERS = ("dynamo", "torchscript")
#: The fp32 guarantee: an exported or accelerated fp32 model keeps every logit within this of PyTorch's.
FP32_TOLERANCE = 1e-4


class ExportError(BisenetError):
    """The exported model is missing, unreadable or disagrees with PyTorch."""


def sidecar_path(onnx_path: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.json`: the readable meta written next to the model."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def read_sidecar(model_path: str | Path | None) -> dict[str, Any] | None:
    """The sidecar JSON of an exported file (ONNX or OpenVINO IR), or None when there is none: the file's
    own embedded meta is then the source."""
    if model_path is None:
        return None
    side = sidecar_path(model_path)
    if not side.is_file():
        return None
    try:
        return dict(json.loads(side.read_text()))
    except (OSError, ValueError) as e:
        raise ExportError(f"{side}: unreadable sidecar JSON ({e})") from None


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
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
    `bisenet_pl.inference.baked.bake_file` around it; None is the plain graph described above.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    from bisenet_pl.checkpoints.meta import complete_meta
    from bisenet_pl.inference.baked import GraphContract, bake_file

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


def _providers(device: torch.device | str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ExportError(
                "device=cuda with backend=onnxruntime needs onnxruntime-gpu (CUDAExecutionProvider); "
                f"this onnxruntime has {', '.join(available)}"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options for every session we open.

    Intra-op threads default to torch's current count, so ORT and torch timings on a shared machine use
    the same cores. No spin-waiting after a run: spinning ORT threads would steal the cores from the torch
    ops that follow (upsample, argmax) and from anything else in the process; the cost is microseconds
    of wake-up per run.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxNet:
    """An ONNX model in ONNX Runtime, callable like a Segmentor in eval mode: torch (N,3,H,W) -> torch
    logits (N,C,H,W) at the input size, on the input's device.

    Attributes: `num_classes`, `meta` (classes, palette, mean, std, maybe test_scale: from the sidecar
    JSON, else from the file's own metadata), `path` (None for an in-memory graph), `session`.

    Args:
        source: the `.onnx` file, or the serialized model's bytes.
        device: "cpu" or "cuda" (needs onnxruntime-gpu).
        threads: ONNX Runtime intra-op threads; None = torch's current thread count.
    """

    name = "onnxruntime fp32 (fused)"

    def __init__(
        self, source: str | Path | bytes, device: torch.device | str = "cpu", threads: int | None = None
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError(
                "backend=onnxruntime needs onnxruntime: pip install 'bisenet_pl[export]'"
            ) from None
        self.path: Path | None = None
        if not isinstance(source, bytes):
            self.path = Path(source)
            if not self.path.is_file():
                raise ExportError(
                    f"{self.path}: no such ONNX file (export one with `python -m bisenet_pl.export`)"
                )
        where = str(self.path) if self.path else "the in-memory ONNX model"
        try:
            model = source if isinstance(source, bytes) else str(source)
            self.session = ort.InferenceSession(model, session_options(threads), providers=_providers(device))
        except ExportError:
            raise
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ExportError(f"{where}: ONNX Runtime cannot load it: {str(e).splitlines()[0]}") from None
        self.device = torch.device(device)
        names = [i.name for i in self.session.get_inputs()]
        self.input_name = INPUT_NAME if INPUT_NAME in names else names[0]
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        self.meta = self._read_meta()
        if self.meta.get("precision") == "int8":  # a quantized export (bisenet_pl.inference.quantize)
            self.name = "onnxruntime int8 (fused)"
        out_shape = self.session.get_outputs()[0].shape
        n = out_shape[1] if len(out_shape) > 1 and isinstance(out_shape[1], int) else None
        self.num_classes = int(n or self.meta.get("num_classes") or len(self.meta.get("classes", [])) or 19)
        self.align_corners = bool(self.meta.get("align_corners", False))

    @staticmethod
    def from_model(model: Segmentor, threads: int | None = None) -> LowResOnnxNet:
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

    def _read_meta(self) -> dict[str, Any]:
        side = read_sidecar(self.path)
        if side is not None:
            return side
        embedded = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        return dict(json.loads(embedded)) if embedded else {}

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's own output for a torch batch, back on the batch's device."""
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (out,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(out).to(x.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


class LowResOnnxNet(OnnxNet):
    """An `OnnxNet` whose graph ends at the 1/8 logits (`OnnxNet.from_model`): `forward_logits` is the
    graph, `__call__` adds the bilinear upsample in torch, as `Segmentor.forward` does."""

    name = "fused + onnxruntime fp32"

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        return F.interpolate(self.run(x), size=size, mode="bilinear", align_corners=self.align_corners)


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
    labels out) gets its own check, `bisenet_pl.inference.baked.check_baked`.
    """
    from bisenet_pl.inference.baked import GraphContract, check_baked

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
    `net` (run by `runtime`) vs the unfused PyTorch model, per input shape, printed; `ExportError` above
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
        print(f"check {shape_str}: max |{runtime} - pytorch| = {diff:.3g} (tolerance {tolerance:g})")
        if not diff <= tolerance:  # also catches NaN
            raise ExportError(
                f"{where}: {runtime} and PyTorch differ on a {shape_str} input: max abs logit "
                f"difference {diff:.3g} > tolerance {tolerance:g}. The exported file is wrong; not using it."
            )
    return diffs
