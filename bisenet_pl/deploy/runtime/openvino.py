"""OpenVINO: an IR `.xml` (or one of our `.onnx` files) compiled for the CPU, run as a `Net`.

openvino is an optional dependency (`bisenet_pl[deploy]`), imported when a model is opened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bisenet_pl.deploy.contract import META_KEY, ExportError, read_sidecar

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


__all__ = ["OPENVINO_SUFFIXES", "OpenVinoNet", "import_openvino", "is_openvino_ir"]
