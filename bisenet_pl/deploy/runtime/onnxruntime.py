"""ONNX Runtime: the one wrapper (`OnnxNet`) for every `.onnx` file we run, and the session options.

`OnnxNet` runs a plain export (normalised float32 in, logits out); `LowResOnnxNet` a graph that ends at
the 1/8 logits (the accelerated CPU path builds one in memory). A baked graph (uint8 in and/or labels
out) is wrapped once more by `deploy.runtime.baked.adapt`. onnxruntime is imported where it is used, so
this module imports without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bisenet_pl.deploy.contract import INPUT_NAME, META_KEY, OUTPUT_NAME, ExportError, read_sidecar


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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
        if self.meta.get("precision") == "int8":  # a quantized export (bisenet_pl.deploy.export.quantize)
            self.name = "onnxruntime int8 (fused)"
        out_shape = self.session.get_outputs()[0].shape
        n = out_shape[1] if len(out_shape) > 1 and isinstance(out_shape[1], int) else None
        self.num_classes = int(n or self.meta.get("num_classes") or len(self.meta.get("classes", [])) or 19)
        self.align_corners = bool(self.meta.get("align_corners", False))

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
    """An `OnnxNet` whose graph ends at the 1/8 logits (`deploy.export.onnx.low_res_onnx_net` builds
    one): `forward_logits` is the graph, `__call__` adds the bilinear upsample in torch, as
    `Segmentor.forward` does."""

    name = "fused + onnxruntime fp32"

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        return F.interpolate(self.run(x), size=size, mode="bilinear", align_corners=self.align_corners)


__all__ = ["LowResOnnxNet", "OnnxNet", "onnxruntime_available", "session_options"]
