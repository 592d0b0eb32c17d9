"""What an exported file promises: tensor names, tolerances, the graph contract, the sidecar.

A leaf: it imports nothing of the package but the error types, so exporters, runtimes and every command
can agree on these without importing each other. See docs/deploy.md for the formats and the checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bisenet_pl.errors import BisenetError, ConfigError

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
META_KEY = "bisenet_pl"
LABELS_NAME = "labels"
#: The fp32 guarantee: an exported or accelerated fp32 model keeps every logit within this of PyTorch's.
FP32_TOLERANCE = 1e-4
#: An argmax graph's labels must agree with PyTorch's on at least this share of pixels...
MIN_LABEL_AGREEMENT = 0.9999
#: ...and exactly wherever PyTorch's top-2 logit margin exceeds this (elsewhere float rounding decides).
LABEL_MARGIN = 1e-4
LAYOUTS = ("nhwc", "nchw")


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


def embed_meta(proto: Any, meta: dict[str, Any]) -> None:
    """Replace our metadata entry of an ONNX model proto with `meta`, in place (other entries kept), so
    the file alone carries what inference needs."""
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)


__all__ = [
    "FP32_TOLERANCE",
    "INPUT_NAME",
    "LABELS_NAME",
    "LABEL_MARGIN",
    "LAYOUTS",
    "META_KEY",
    "MIN_LABEL_AGREEMENT",
    "OUTPUT_NAME",
    "ExportError",
    "GraphContract",
    "embed_meta",
    "read_sidecar",
    "sidecar_path",
]
