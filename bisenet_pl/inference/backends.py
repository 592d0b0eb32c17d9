"""One way to get a `net` for the inference modes from what a user names on the command line: a
checkpoint, an `.onnx` or an OpenVINO `.xml` file, a backend (torch, onnxruntime or openvino), and an
accelerated path.

`evaluate`, `predict` and `benchmark` all call `load_net`, so a path measured by one is the path the
others run.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from bisenet_pl.checkpoints.meta import complete_meta
from bisenet_pl.deploy.runtime.base import Net
from bisenet_pl.deploy.runtime.openvino import is_openvino_ir
from bisenet_pl.errors import ConfigError

if TYPE_CHECKING:
    from bisenet_pl.models.segmentor import Segmentor

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
PLAIN = "plain fp32 eager (unfused, NCHW)"


@dataclass
class LoadedNet:
    """`net` (callable: normalised batch -> logits at its size), its readable `name`, the completed
    `meta` (classes, palette, mean, std, ...), and the PyTorch `model` behind it (None for an ONNX
    file)."""

    net: Net
    name: str
    meta: dict[str, Any]
    model: nn.Module | None = None
    _tmp: Any = field(default=None, repr=False)


def _model(source: str | Path | nn.Module | None, device: torch.device) -> Segmentor:
    from bisenet_pl.checkpoints import load_model
    from bisenet_pl.models import Segmentor

    if isinstance(source, nn.Module):  # an already-built model (the Python API): used as it is
        return cast("Segmentor", source.to(device).eval())
    if source is None:
        log.warning("no checkpoint given: using a freshly initialised model (random weights)")
        return Segmentor(aux_heads=False).to(device).eval()
    return load_model(source, device=device)


def is_onnx(source: str | Path | nn.Module | None) -> bool:
    return isinstance(source, (str, Path)) and str(source).endswith(".onnx")


def _openvino(source: str | Path | nn.Module | None, device: torch.device, exporter: str) -> LoadedNet:
    """OpenVINO on the CPU (whatever `device` says; tensors come back on the caller's device): an IR
    `.xml` or an `.onnx` as they are, a PyTorch model converted first through its ONNX export."""
    from bisenet_pl.deploy.export.openvino import convert
    from bisenet_pl.deploy.runtime.openvino import OpenVinoNet

    model = None
    if is_onnx(source) or is_openvino_ir(source):
        net = OpenVinoNet(Path(str(source)))
    else:
        model = _model(source, device)
        ov_model, _ = convert(model, getattr(model, "meta", None), exporter=exporter)
        net = OpenVinoNet(ov_model)
    return LoadedNet(net, net.name, complete_meta(net.num_classes, net.meta), model)


def load_net(
    source: str | Path | nn.Module | None,
    backend: str = "torch",
    device: torch.device | str = "cpu",
    fast: bool = False,
    options: Any = None,
    allow_compile: bool = False,
    exporter: str = "torchscript",
) -> LoadedNet:
    """Build the net that runs `source` on `backend`.

    Args:
        source: our checkpoint, a training `.ckpt`, an mmseg `.pth`, an exported `.onnx` or OpenVINO IR
            `.xml` (their INT8 versions too), an already-built
            model (a `Segmentor`, used as it is), or None for a freshly initialised model (speed only).
        backend: "torch", "onnxruntime" (an `.onnx` file as is, a PyTorch checkpoint exported first), or
            "openvino" (an IR `.xml` or an `.onnx` as is, a PyTorch checkpoint converted first; CPU).
        fast: the fastest path that keeps the accuracy guarantees (`accelerate.fastest_net`).
        options: an explicit `accelerate.FastOptions` path instead (torch only).
    """
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if is_onnx(source) and backend not in ("onnxruntime", "openvino"):
        raise ConfigError(
            f"{source} is an exported ONNX file: add backend=onnxruntime to run it (or backend=openvino)"
        )
    if is_openvino_ir(source) and backend != "openvino":
        raise ConfigError(f"{source} is an OpenVINO IR file: add backend=openvino to run it")
    if backend == "openvino":
        return _openvino(source, device, exporter)
    if backend == "onnxruntime":
        from bisenet_pl.deploy.export.onnx import export_onnx
        from bisenet_pl.deploy.runtime.baked import adapt
        from bisenet_pl.deploy.runtime.onnxruntime import OnnxNet

        tmp = None
        model = None
        if is_onnx(source):
            path = Path(str(source))
        else:
            model = _model(source, device)
            tmp = tempfile.TemporaryDirectory()
            path = export_onnx(model, Path(tmp.name) / "model.onnx", getattr(model, "meta", None), exporter)
        # A baked file (uint8 in and/or labels out, as its meta says) gets the adapter the modes need.
        onnx_net = adapt(OnnxNet(path, device=device))
        meta = complete_meta(onnx_net.num_classes, onnx_net.meta)
        return LoadedNet(onnx_net, onnx_net.name, meta, model, tmp)

    from bisenet_pl.inference.accelerate import FastNet, FastOptions, fastest_net

    model = _model(source, device)
    meta = complete_meta(int(getattr(model, "num_classes", 19)), getattr(model, "meta", None))
    if fast:
        net, name = fastest_net(model, device, allow_compile=allow_compile)
        return LoadedNet(net, name, meta, model)
    options = options or FastOptions()
    if options == FastOptions():
        return LoadedNet(model, PLAIN, meta, model)
    try:
        return LoadedNet(FastNet(model, options), options.name, meta, model)
    except ValueError as e:
        raise ConfigError(str(e)) from None


__all__ = ["BACKENDS", "PLAIN", "LoadedNet", "is_onnx", "is_openvino_ir", "load_net"]
