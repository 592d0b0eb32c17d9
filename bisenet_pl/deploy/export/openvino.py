"""OpenVINO IR export: the fused fp32 model converted through our checked ONNX file (or OpenVINO's own
PyTorch tracer), saved as `.xml` + `.bin` + sidecar, with our meta in its rt_info.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bisenet_pl.deploy.contract import (
    FP32_TOLERANCE,
    INPUT_NAME,
    META_KEY,
    OUTPUT_NAME,
    ExportError,
    sidecar_path,
)
from bisenet_pl.deploy.export.onnx import DEFAULT_CHECK_SHAPES, check_fp32, export_onnx, move_aside
from bisenet_pl.deploy.runtime.openvino import OPENVINO_SUFFIXES, OpenVinoNet, import_openvino

if TYPE_CHECKING:
    from bisenet_pl.models.segmentor import Segmentor

#: How the IR is made from a PyTorch model: through the exported ONNX file, or by OpenVINO's own tracer.
CONVERTERS = ("onnx", "pytorch")


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


def write_checked_ir(
    model: Segmentor,
    out: Path,
    meta: dict[str, Any] | None,
    via: str = "onnx",
    exporter: str = "dynamo",
    opset: int | None = None,
    shapes: Sequence[Sequence[int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = FP32_TOLERANCE,
) -> tuple[dict[str, Any], list[float]]:
    """format=openvino: the fp32 IR (+ .bin + sidecar), held to the same fp32 check as ONNX files; a
    failing IR is moved aside. Returns (the file's meta, the check's per-shape max abs differences)."""
    ov_model, full_meta = convert(model, meta, via, exporter, opset)
    full_meta.update({"format": "openvino", "precision": "fp32"})
    save_ir(ov_model, out, full_meta)
    try:
        diffs = check_fp32(OpenVinoNet(out), model, shapes, tolerance, where=str(out), runtime="openvino")
    except ExportError:
        move_aside(ir_files(out))
        raise
    return full_meta, diffs


__all__ = ["CONVERTERS", "convert", "convert_onnx", "ir_files", "save_ir", "set_meta", "write_checked_ir"]
