"""OpenVINO: a Segmentor as an OpenVINO model (IR `.xml` + `.bin`), and `OpenVinoNet`, which runs one.

The IR keeps the ONNX graph's contract (`bisenet_pl.inference.onnx`): input `image` (N, 3, H, W) float32
normalised, output `logits` (N, C, H, W) at the input size, N/H/W dynamic, the fused fp32 model. The
meta that inference needs is stored in the model's `rt_info` (key `bisenet_pl`, so the `.xml` alone
suffices) and in the same readable sidecar `<out>.json` as an ONNX export.

Weights stay fp32 (`compress_to_fp16=False`: OpenVINO's default would round them to fp16) and the CPU
plugin is told to compute in fp32 (`INFERENCE_PRECISION_HINT`): on CPUs with bf16 units it would
otherwise pick bf16 by itself, and the fp32 check against PyTorch would no longer mean anything.

openvino is an optional dependency (`pip install 'bisenet_pl[deploy]'`), imported only here, inside
functions.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bisenet_pl.inference.onnx import (
    INPUT_NAME,
    META_KEY,
    OUTPUT_NAME,
    ExportError,
    export_onnx,
    read_sidecar,
    sidecar_path,
)

if TYPE_CHECKING:
    from bisenet_pl.models.segmentor import Segmentor

#: How the IR is made from a PyTorch model: through the exported ONNX file, or by OpenVINO's own tracer.
CONVERTERS = ("onnx", "pytorch")
OPENVINO_SUFFIXES = (".xml",)


def import_openvino() -> Any:
    """The `openvino` module, or one readable error saying how to install it."""
    try:
        import openvino  # type: ignore[import-untyped]
    except ImportError:
        raise ExportError(
            "OpenVINO is not installed: pip install 'bisenet_pl[deploy]' (backend=openvino, "
            "format=openvino, format=openvino-int8)"
        ) from None
    return openvino


def is_openvino_ir(source: object) -> bool:
    return isinstance(source, (str, Path)) and str(source).endswith(OPENVINO_SUFFIXES)


def convert(
    model: Segmentor,
    meta: dict[str, Any] | None = None,
    via: str = "onnx",
    exporter: str = "dynamo",
    opset: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The fused fp32 `model` as an in-memory `openvino.Model` and its completed meta (in its rt_info).

    `via="onnx"` converts our exported ONNX file (the graph `check_onnx` vouches for; `exporter`/`opset`
    as in `export_onnx`); `via="pytorch"` lets OpenVINO trace the PyTorch model itself, with our input and
    output names set afterwards.
    """
    ov = import_openvino()
    if via not in CONVERTERS:
        raise ExportError(f"via={via!r}: choose one of {', '.join(CONVERTERS)}")
    with tempfile.TemporaryDirectory() as tmp:
        # the ONNX export also builds the full meta (classes, palette, mean, std, opset ...)
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", meta, exporter=exporter, opset=opset)
        full_meta = dict(json.loads(sidecar_path(onnx_path).read_text()))
        if via == "onnx":
            ov_model = convert_onnx(onnx_path)
        else:
            net = model.inference_copy(fuse=True).float().cpu()
            with torch.no_grad():
                ov_model = ov.convert_model(net, example_input=torch.zeros(1, 3, 64, 128))
            ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
            ov_model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
            for key in ("exporter", "opset"):
                full_meta.pop(key, None)
    full_meta["converter"] = f"openvino.convert_model from {'ONNX' if via == 'onnx' else 'PyTorch'}"
    full_meta["openvino"] = ov.__version__
    set_meta(ov_model, full_meta)
    return ov_model, full_meta


def convert_onnx(onnx_path: str | Path) -> Any:
    """Our ONNX file as an in-memory `openvino.Model` (its metadata kept in the rt_info)."""
    ov = import_openvino()
    return ov.convert_model(str(onnx_path))


def set_meta(ov_model: Any, meta: dict[str, Any]) -> None:
    """Store `meta` as JSON in the model's rt_info, where `OpenVinoNet` finds it without a sidecar."""
    ov_model.set_rt_info(json.dumps(meta), [META_KEY])


def save_ir(ov_model: Any, out: str | Path, meta: dict[str, Any]) -> Path:
    """Write `ov_model` as `out` (`.xml`) + its `.bin`, fp32 weights, and the sidecar `<out>.json`."""
    ov = import_openvino()
    out = Path(out)
    if out.suffix not in OPENVINO_SUFFIXES:
        raise ExportError(f"out={out}: an OpenVINO IR file name must end in .xml")
    out.parent.mkdir(parents=True, exist_ok=True)
    set_meta(ov_model, meta)
    ov.save_model(ov_model, str(out), compress_to_fp16=False)
    sidecar_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def ir_files(xml: str | Path) -> list[Path]:
    """The files one IR consists of: `.xml`, `.bin` and the sidecar (those that exist)."""
    xml = Path(xml)
    return [p for p in (xml, xml.with_suffix(".bin"), sidecar_path(xml)) if p.exists()]


def _rt_meta(ov_model: Any) -> dict[str, Any]:
    """Our meta from the rt_info: our own key (an IR we wrote) or the ONNX file's metadata, which
    OpenVINO's ONNX reader keeps under `framework`."""
    for path in ([META_KEY], ["framework", META_KEY]):
        if ov_model.has_rt_info(path):
            return dict(json.loads(ov_model.get_rt_info(path).astype(str)))
    return {}


class OpenVinoNet:
    """An OpenVINO model compiled for the CPU, callable like a Segmentor in eval mode (and like `OnnxNet`):
    torch (N,3,H,W) -> torch logits (N,C,H,W) at the input size, on the input's device.

    Attributes: `num_classes`, `meta` (from the sidecar JSON, else the model's rt_info), `path`, and
    `precision` ("int8" for a quantized model, from its meta, else "fp32").

    Args:
        source: an OpenVINO IR `.xml` (its `.bin` beside it), our `.onnx` file, or an `openvino.Model`.
        threads: CPU inference threads; None = torch's current thread count, as `OnnxNet`.
    """

    def __init__(self, source: str | Path | Any, threads: int | None = None) -> None:
        ov = import_openvino()
        import openvino.properties as props  # type: ignore[import-untyped]
        import openvino.properties.hint as hints  # type: ignore[import-untyped]

        core = ov.Core()
        self.path: Path | None = None
        if isinstance(source, (str, Path)):
            self.path = Path(source)
            if not self.path.is_file():
                raise ExportError(
                    f"{self.path}: no such model file (export one with "
                    "`python -m bisenet_pl.export ckpt=... format=openvino out=model.xml`)"
                )
            if self.path.suffix in OPENVINO_SUFFIXES and not self.path.with_suffix(".bin").is_file():
                raise ExportError(
                    f"{self.path}: its weights {self.path.with_suffix('.bin').name} are missing"
                )
            try:
                ov_model = core.read_model(str(self.path))
            except Exception as e:  # OpenVINO raises RuntimeError/its own types with long C++ messages
                raise ExportError(f"{self.path}: OpenVINO cannot read it: {str(e).splitlines()[0]}") from None
        else:
            ov_model = source
        self.meta = self._read_meta(ov_model)
        config = {
            hints.inference_precision(): ov.Type.f32,  # fp32 where the graph is float, never bf16 silently
            hints.performance_mode(): hints.PerformanceMode.LATENCY,
            props.inference_num_threads(): int(threads or torch.get_num_threads()),
        }
        where = str(self.path) if self.path else "the in-memory OpenVINO model"
        try:
            self.compiled = core.compile_model(ov_model, "CPU", config)
        except Exception as e:
            raise ExportError(f"{where}: OpenVINO cannot compile it: {str(e).splitlines()[0]}") from None
        self.request = self.compiled.create_infer_request()
        out_shape = ov_model.outputs[0].get_partial_shape()
        n = out_shape[1].get_length() if out_shape.rank.is_static and out_shape[1].is_static else None
        self.num_classes = int(n or self.meta.get("num_classes") or len(self.meta.get("classes", [])) or 19)
        self.precision = str(self.meta.get("precision", "fp32"))
        self.name = f"openvino {self.precision} (fused)"

    def _read_meta(self, ov_model: Any) -> dict[str, Any]:
        side = read_sidecar(self.path)
        return side if side is not None else _rt_meta(ov_model)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self.request.infer({0: array}, share_inputs=True)
        return torch.from_numpy(np.array(out[self.compiled.output(0)])).to(x.device)


__all__ = [
    "CONVERTERS",
    "OpenVinoNet",
    "convert",
    "convert_onnx",
    "import_openvino",
    "ir_files",
    "is_openvino_ir",
    "save_ir",
]
