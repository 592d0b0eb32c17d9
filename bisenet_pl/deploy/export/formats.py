"""The export formats a user can ask for, and the one check of a request before any work is done."""

from __future__ import annotations

from pathlib import Path

from bisenet_pl.errors import BisenetError, CheckpointError, ConfigError

#: format= -> the file name's ending.
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "onnx-int8": ".onnx", "openvino-int8": ".xml"}
#: The formats whose graph can be baked (uint8 in and/or labels out).
BAKEABLE = ("onnx", "onnx-int8")


def check_request(out: str | None, fmt: str, ckpt: str | None, bake: bool) -> Path:
    """`out` as a path, or one readable error for a request that cannot be met (no `out`, an unknown
    format, a file name of another format, an exported file given as the source, baking a format that
    cannot be baked)."""
    if not out:
        raise BisenetError("out=PATH is required (e.g. out=model.onnx)")
    path = Path(out)
    if fmt not in SUFFIXES:
        raise ConfigError(f"format={fmt}: choose one of {', '.join(SUFFIXES)}")
    if path.suffix != SUFFIXES[fmt]:
        raise BisenetError(f"out={path}: format={fmt} writes a file whose name ends in {SUFFIXES[fmt]}")
    if ckpt is not None and Path(str(ckpt)).suffix in (".onnx", ".xml"):
        raise CheckpointError(f"ckpt={ckpt} is already an exported file; give the PyTorch checkpoint")
    if bake and fmt not in BAKEABLE:
        raise ConfigError(
            f"preprocess=true / argmax=true are ONNX options (format=onnx|onnx-int8), not {fmt}"
        )
    return path


__all__ = ["BAKEABLE", "SUFFIXES", "check_request"]
