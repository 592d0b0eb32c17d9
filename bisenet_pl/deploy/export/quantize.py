"""INT8 post-training quantization of the exported graph, and the accuracy gate it must pass.

Two quantizers, one recipe:

- `onnx-int8`: ONNX Runtime's static quantizer (`quantize_static`, QDQ format: QuantizeLinear /
  DequantizeLinear pairs around the int8 convolutions, which ORT's CPU kernels run as int8), uint8
  activations and per-channel int8 weights (the CPU recipe for VNNI machines), MinMax ranges;
- `openvino-int8`: NNCF's `nncf.quantize` on the OpenVINO model (its default `performance` preset).

Both calibrate on `calibration` images preprocessed exactly as the test pipeline does (keep-ratio resize
into the test scale, normalise: the items of `make_dataset(split, build_test_transform(...))`), and both
keep the layers named by `keep_float` (regular expressions, searched in node names and in the names of
the tensors a node reads, so `conv_seg` finds the classifier in either exporter's graph) in float. The
classifier is the default: its logits decide the argmax directly, and it is 0.1 % of the MACs.

Then the gate: `measure(reference, candidate)`, given by the caller, scores the quantized net and the
fp32 PyTorch model on labelled images (the export command passes `inference.compare.compare_on_split`:
the one inference path, the one metric, the argmax agreement; this package never imports the inference
modes, which build on it). A quantized
model whose mIoU drops by more than `max_miou_drop` points is refused (`QuantizationRefused`) and never
written under the name the user asked for: everything is built in a temporary folder next to `out` and
moved there only when the gate passes.

onnxruntime, openvino and nncf are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bisenet_pl.deploy.contract import ExportError, embed_meta, sidecar_path
from bisenet_pl.deploy.export.onnx import export_onnx
from bisenet_pl.deploy.export.openvino import convert_onnx, save_ir
from bisenet_pl.deploy.runtime.onnxruntime import OnnxNet
from bisenet_pl.deploy.runtime.openvino import OpenVinoNet
from bisenet_pl.errors import ConfigError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from bisenet_pl.deploy.runtime.base import Net
    from bisenet_pl.models.segmentor import Segmentor

log = logging.getLogger(__name__)

INT8_FORMATS = ("onnx-int8", "openvino-int8")
DEFAULT_KEEP_FLOAT: tuple[str, ...] = ("conv_seg",)
DEFAULT_MAX_MIOU_DROP = 0.5


class QuantizationRefused(ExportError):
    """The quantized model lost more mIoU than the gate allows; it was not written."""


@dataclass(frozen=True)
class GateNumbers:
    """The quantized model measured against fp32 on the labelled split."""

    split: str
    images: int
    fp32_miou: float
    int8_miou: float
    miou_drop: float  # points: fp32 - int8
    agreement: float  # argmax agreement, percent of pixels
    max_miou_drop: float

    @property
    def passed(self) -> bool:
        return self.miou_drop <= self.max_miou_drop  # NaN fails

    def line(self) -> str:
        return (
            f"INT8 vs fp32 on {self.images} {self.split} images: mIoU {self.int8_miou:.2f} vs "
            f"{self.fp32_miou:.2f} (drop {self.miou_drop:.2f} points, gate {self.max_miou_drop:g}), "
            f"argmax agreement {self.agreement:.2f} %"
        )


@dataclass
class Int8Result:
    path: Path
    meta: dict[str, Any]
    gate: GateNumbers


def calibration_inputs(dataset: Dataset, count: int) -> list[int]:
    """The first `count` item indices of `dataset` (all of it if smaller): a fixed, reproducible set."""
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ConfigError("calibration: the calibration split has no images")
    if count < 1:
        raise ConfigError(f"calibration.images={count}: needs at least one image")
    return list(range(min(int(count), n)))


class _Images:
    """The calibration images as (1, 3, H, W) float32 arrays, read one at a time (re-iterable: NNCF
    passes over them more than once)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in self.indices:
            yield np.ascontiguousarray(self.dataset[i]["image"][None].numpy(), dtype=np.float32)


def keep_float_nodes(nodes: Sequence[tuple[str, Sequence[str]]], patterns: Sequence[str]) -> list[str]:
    """Names of the `nodes` ((name, names of the tensors it reads)) that a `patterns` entry finds.

    A pattern that finds nothing is an error naming it: a typo must not quietly quantize everything.
    """
    found: list[str] = []
    for pattern in patterns:
        try:
            rx = re.compile(str(pattern))
        except re.error as e:
            raise ConfigError(
                f"calibration.keep_float: {pattern!r} is not a regular expression ({e})"
            ) from None
        hits = [name for name, inputs in nodes if rx.search(name) or any(rx.search(i) for i in inputs)]
        if not hits:
            raise ConfigError(
                f"calibration.keep_float: {pattern!r} matches no layer of the model (try a module name such "
                "as conv_seg or decode_head)"
            )
        found += [h for h in hits if h not in found]
    return found


class _DropLogRecords(logging.Filter):
    """Drops the records containing `text`: ONNX Runtime's quantizer logs, twice, on the root logger, a
    hint to run its pre-processing (shape inference, graph optimisation), which is for graphs of unknown
    shapes; ours is exported fused with its shapes named, and the gate measures the result either way."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quantize_onnx(float_onnx: Path, out: Path, images: _Images, keep_float: Sequence[str]) -> list[str]:
    """ONNX Runtime static QDQ quantization of `float_onnx` into `out`; returns the nodes kept in float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(float_onnx), load_external_data=False).graph
    excluded = keep_float_nodes([(n.name, list(n.input)) for n in graph.node], keep_float)
    input_name = graph.input[0].name

    class Reader(CalibrationDataReader):
        """The images of the current range (`set_range`): ORT calibrates range by range."""

        def __init__(self) -> None:
            self.it: Iterator[np.ndarray] = iter(())

        def __len__(self) -> int:
            return len(images)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.it = iter(_Images(images.dataset, images.indices[start_index:end_index]))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    # Min/max ranges computed and merged every `stride` images, so memory holds only that many images'
    # activations (all of them at once would be gigabytes at 1024x2048); the stride must divide the count.
    stride = max(d for d in range(1, 5) if len(images) % d == 0)
    hint = _DropLogRecords("pre-process")
    logging.getLogger().addFilter(hint)
    try:
        quantize_static(
            str(float_onnx),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=excluded,
            extra_options={"CalibStridedMinMax": stride},
        )
    finally:
        logging.getLogger().removeFilter(hint)
    return excluded


def quantize_openvino(ov_model: Any, images: _Images, keep_float: Sequence[str]) -> tuple[Any, list[str]]:
    """NNCF post-training quantization of an `openvino.Model`; returns (int8 model, nodes kept float)."""
    try:
        import nncf  # type: ignore[import-untyped]
    except ImportError:
        raise ExportError("format=openvino-int8 needs NNCF: pip install 'bisenet_pl[deploy]'") from None

    nodes = [(op.get_friendly_name(), [i.get_source_output().get_node().get_friendly_name()
              for i in op.inputs()]) for op in ov_model.get_ops()]  # fmt: skip
    excluded = keep_float_nodes(nodes, keep_float)
    nncf.set_log_level(logging.WARNING)  # its per-node INFO lines; the progress bars stay
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset(images),
        subset_size=len(images),
        ignored_scope=nncf.IgnoredScope(names=excluded, validate=False),
    )
    return quantized, excluded


def _embed_meta(onnx_path: Path, meta: dict[str, Any]) -> None:
    """Replace the ONNX file's metadata entry with `meta` (so the file alone suffices, as fp32 exports)."""
    import onnx

    proto = onnx.load(str(onnx_path))
    embed_meta(proto, meta)
    onnx.save(proto, str(onnx_path))


def export_int8(
    model: Segmentor,
    out: str | Path,
    fmt: str,
    calibration: Dataset,
    measure: Callable[[Net, Net], GateNumbers],
    meta: dict[str, Any] | None = None,
    images: int = 300,
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
    max_miou_drop: float = DEFAULT_MAX_MIOU_DROP,
    exporter: str = "dynamo",
    opset: int | None = None,
    calibration_split: str = "train",
) -> Int8Result:
    """Quantize `model` to `out` in `fmt` ("onnx-int8" or "openvino-int8"), calibrated on the first
    `images` items of `calibration`, and gate it with `measure(fp32 reference, int8 net)` (see the
    module docstring), refused above `max_miou_drop` points.

    Raises `QuantizationRefused` (both mIoUs in its message) when the drop exceeds `max_miou_drop`;
    `out` is then not written. The sidecar and the file's meta record format, precision, calibration
    and the gate's numbers.
    """
    if fmt not in INT8_FORMATS:
        raise ConfigError(f"format={fmt!r}: the INT8 formats are {', '.join(INT8_FORMATS)}")
    out = Path(out)
    suffix = ".onnx" if fmt == "onnx-int8" else ".xml"
    if out.suffix != suffix:
        raise ConfigError(f"out={out}: format={fmt} writes a {suffix} file; name it e.g. model.int8{suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    indices = calibration_inputs(calibration, images)
    calib = _Images(calibration, indices)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp_name:
        tmp = Path(tmp_name)
        float_onnx = export_onnx(model, tmp / "float.onnx", meta, exporter=exporter, opset=opset)
        full_meta = dict(json.loads(sidecar_path(float_onnx).read_text()))
        int8_path = tmp / out.name
        if fmt == "onnx-int8":
            excluded = quantize_onnx(float_onnx, int8_path, calib, keep_float)
            net: Any = OnnxNet(int8_path)
            method = "onnxruntime quantize_static: QDQ, uint8 activations, per-channel int8 weights, MinMax"
        else:
            ov_model = convert_onnx(float_onnx)
            ov_int8, excluded = quantize_openvino(ov_model, calib, keep_float)
            net = OpenVinoNet(ov_int8)
            method = "nncf.quantize (performance preset)"
        reference = model.inference_copy(fuse=False).float().cpu()
        gate = replace(measure(reference, net), max_miou_drop=float(max_miou_drop))
        log.info(gate.line())
        if not gate.passed:
            raise QuantizationRefused(
                f"{out}: refused, not written: the INT8 model's mIoU is {gate.int8_miou:.2f} against "
                f"{gate.fp32_miou:.2f} for fp32 on {gate.images} {gate.split} images, a drop of "
                f"{gate.miou_drop:.2f} points > gate.max_miou_drop={gate.max_miou_drop:g} (argmax agreement "
                f"{gate.agreement:.2f} %). Try more calibration images, or keep more layers in float "
                "(calibration.keep_float)."
            )
        full_meta.update(
            {
                "format": fmt,
                "precision": "int8",
                "calibration": {
                    "images": len(indices),
                    "split": calibration_split,
                    "method": method,
                    "keep_float": list(keep_float),
                    "float_nodes": excluded,
                },
                "gate": asdict(gate),
            }
        )
        if fmt == "onnx-int8":
            _embed_meta(int8_path, full_meta)
            os.replace(int8_path, out)
            sidecar_path(out).write_text(json.dumps(full_meta, indent=2) + "\n")
        else:
            staged = save_ir(ov_int8, int8_path, full_meta)
            for src in (staged.with_suffix(".bin"), sidecar_path(staged), staged):  # the .xml last
                os.replace(src, out.parent / src.name)
    return Int8Result(out, full_meta, gate)


__all__ = [
    "DEFAULT_KEEP_FLOAT",
    "DEFAULT_MAX_MIOU_DROP",
    "INT8_FORMATS",
    "GateNumbers",
    "Int8Result",
    "QuantizationRefused",
    "export_int8",
    "keep_float_nodes",
    "quantize_onnx",
    "quantize_openvino",
]
