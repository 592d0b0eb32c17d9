"""MACs and parameter counts, as mmseg's `get_flops.py` reports them (docs/reproduction.md#speed).

mmseg's tool (mmengine's FlopAnalyzer, i.e. fvcore's op handles) counts one multiply-add as one
"FLOP", so its "GFLOPs" are GMACs (docs/reproduction.md#speed). It removes the aux heads, runs the model
in eval mode
and counts backbone + decode head without the final upsample. This module reproduces that count
with forward hooks and fvcore's per-op formulas, so fvcore is not needed at run time:

| op | MACs (fvcore handle) |
| --- | --- |
| Conv2d | batch * prod(weight.shape) * prod(out spatial); bias not counted |
| BatchNorm (eval) | numel(input) * (2 if affine else 1); (train: 5 or 4) |
| bilinear resize | 4 * numel(output); nearest: 1 * numel(output) |
| AdaptiveAvgPool2d | numel(input) |
| Linear | in_features * numel(output) |
| max/avg pool, ReLU, sigmoid, add, mul, cat, dropout | 0 (fvcore ignores or skips them) |
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bisenet_pl.models.layers import Resize


def _module_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> tuple[str, int] | None:
    """(operator name, MACs) of one leaf-module call, or None when fvcore would not count it."""
    if isinstance(module, nn.Conv2d):
        k = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
        return "conv", output.numel() * k
    if isinstance(module, _BatchNorm):
        numel = inputs[0].numel()
        if module.training:
            return "batch_norm", numel * (5 if module.affine else 4)
        return "batch_norm", numel * (2 if module.affine else 1)
    if isinstance(module, Resize):
        return "upsample_bilinear2d", 4 * output.numel()
    if isinstance(module, nn.Upsample):
        if module.mode == "bilinear":
            return "upsample_bilinear2d", 4 * output.numel()
        if module.mode == "nearest":
            return "upsample_nearest2d", output.numel()
        return None
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return "adaptive_avg_pool2d", inputs[0].numel()
    if isinstance(module, nn.Linear):
        return "linear", module.in_features * output.numel()
    return None


def _parts(name: str) -> list[str]:
    """The report buckets a module name belongs to (a Segmentor's parts, else its top-level child)."""
    parts = []
    top = name.split(".", 1)[0]
    if top:
        parts.append(top)
    if name.startswith("backbone."):
        sub = name.split(".")[1]
        if sub in ("detail", "semantic", "bga"):
            parts.append(sub)
    return parts


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 3, 512, 1024)) -> dict[str, Any]:
    """Count multiply-accumulates of one forward pass as mmseg's get_flops does (docs/reproduction.md#speed).

    For a model with `forward_logits` (a Segmentor), that method is counted: backbone + decode
    head, no aux heads, no final upsample. Any other module is counted through its `forward`.
    The model runs in eval mode (as get_flops does; train-mode BN could not even run a 1x1 pooled
    map of batch 1) and its train/eval flags are restored afterwards; nothing else is changed.

    Returns a dict of ints: `total`, one entry per top-level child that did work (for a Segmentor:
    `backbone`, `decode_head`), `detail`, `semantic`, `bga` for a BiSeNetV2 `backbone`, and
    `by_operator` (a dict: conv, batch_norm, upsample_bilinear2d, adaptive_avg_pool2d, ...).
    At 1x3x512x1024 the Segmentor gives total 24.71 G (backbone 14.87, detail 11.75, semantic 1.37,
    bga 1.75, decode head 9.84). A fused model (`Segmentor.fuse()`) has no BN left and counts 24.61 G.
    """
    counts: dict[str, int] = defaultdict(int)
    by_op: dict[str, int] = defaultdict(int)
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            res = _module_macs(module, inputs, output)
            if res is None:
                return
            op, macs = res
            by_op[op] += macs
            counts["total"] += macs
            for part in _parts(name):
                counts[part] += macs

        return hook

    for name, module in model.named_modules():
        handles.append(module.register_forward_hook(make_hook(name)))

    flags = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        model.eval()
        x = torch.zeros(tuple(input_shape), device=device, dtype=dtype)
        forward_logits = getattr(model, "forward_logits", None)
        if callable(forward_logits):
            forward_logits(x)
        else:
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag

    result: dict[str, Any] = {"total": 0}
    result.update(counts)
    result["by_operator"] = dict(by_op)
    return result


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts (BN running stats excluded), docs/reproduction.md#speed

    Always: `total` and one entry per top-level child. For a Segmentor also `detail`, `semantic`,
    `bga`, `aux_heads` (sum), `aux_head_0..3`, `inference` (backbone + decode head: 3,358,883 for the
    default model) and `training` (everything: 14,804,255).
    """
    result: dict[str, int] = {"total": _n_params(model)}
    for name, child in model.named_children():
        n = _n_params(child)
        if n:  # parameterless helpers (e.g. a Resize) are not parts worth reporting
            result[name] = n
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        for sub in ("detail", "semantic", "bga"):
            if hasattr(backbone, sub):
                result[sub] = _n_params(getattr(backbone, sub))
    aux = getattr(model, "aux_heads", None)
    if isinstance(aux, nn.ModuleList):
        for i, head in enumerate(aux):
            result[f"aux_head_{i}"] = _n_params(head)
    if backbone is not None and hasattr(model, "decode_head"):
        result["inference"] = _n_params(backbone) + _n_params(cast(nn.Module, model.decode_head))
        result["training"] = result["total"]
    return result


__all__ = ["count_macs", "count_parameters"]
