"""The model's constructor arguments, read from a state dict's shapes, and a check that the two fit."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bisenet_pl.checkpoints.mmseg import AUX_PREFIX
from bisenet_pl.errors import CheckpointError
from bisenet_pl.models.segmentor import Segmentor

_SHOW = 5  # how many key names an error message lists


def infer_model_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Segmentor arguments read from tensor shapes (our key names); defaults where a key is absent.

    Used for mmseg checkpoints and Lightning checkpoints without a stored config. Returns every
    argument: `head_dropout` and `align_corners` leave no trace in weights and keep Segmentor's
    (mmseg's) defaults, 0.1 and False.
    """
    config: dict[str, Any] = {
        name: list(p.default) if isinstance(p.default, tuple) else p.default
        for name, p in inspect.signature(Segmentor.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }

    def out_ch(key: str) -> int | None:
        t = state_dict.get(key)
        return int(t.shape[0]) if isinstance(t, torch.Tensor) and t.dim() > 0 else None

    n = out_ch("decode_head.conv_seg.weight")
    if n is not None:
        config["num_classes"] = n
    config["aux_heads"] = any(k.startswith(AUX_PREFIX) for k in state_dict)

    detail: list[int] = []
    while (c := out_ch(f"backbone.detail.detail_branch.{len(detail)}.0.conv.weight")) is not None:
        detail.append(c)
    if detail:
        config["detail_channels"] = detail

    stem = out_ch("backbone.semantic.stage1.conv_first.conv.weight")
    if stem is not None:
        semantic = [stem]
        while (c := out_ch(f"backbone.semantic.stage{len(semantic) + 1}.0.conv2.0.conv.weight")) is not None:
            semantic.append(c)
        config["semantic_channels"] = semantic
        mid = out_ch("backbone.semantic.stage2.0.dwconv.0.conv.weight")
        if mid is not None and mid % stem == 0:
            config["semantic_expansion_ratio"] = mid // stem

    bga = out_ch("backbone.bga.conv.conv.weight")
    if bga is not None:
        config["bga_channels"] = bga
    dec = out_ch("decode_head.convs.0.conv.weight")
    if dec is not None:
        config["decode_channels"] = dec
    aux: list[int] = []
    while (c := out_ch(f"{AUX_PREFIX}{len(aux)}.convs.0.conv.weight")) is not None:
        aux.append(c)
    if aux:
        config["aux_channels"] = aux
    return config


def first_names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (", ..." if len(names) > _SHOW else "")


def state_dict_differences(reference: Mapping[str, Any], sd: Mapping[str, Any]) -> list[str]:
    """What keeps `sd` from loading into a model whose state dict is `reference` (tensors, or anything
    with a `.shape`): counts and first names of missing keys, unexpected keys and shape mismatches; empty
    when it loads. The one comparison behind every "checkpoint of another model" message."""
    missing = [k for k in reference if k not in sd]
    unexpected = [k for k in sd if k not in reference]
    bad_shape = [
        f"{k} (file {tuple(sd[k].shape)}, model {tuple(reference[k].shape)})"
        for k in reference
        if k in sd
        and (not isinstance(sd[k], torch.Tensor) or tuple(sd[k].shape) != tuple(reference[k].shape))
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {first_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {first_names(unexpected)}")
    if bad_shape:
        parts.append(f"{len(bad_shape)} shape mismatch(es): {first_names(bad_shape)}")
    return parts


def check_against_model(path: Path, config: dict[str, Any], sd: Mapping[str, Any]) -> None:
    """Raise a CheckpointError naming missing/unexpected keys and shape mismatches, if any."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no init cost
            reference = Segmentor(**config).state_dict()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its model config {config!r} cannot build a Segmentor: {e}") from None
    parts = state_dict_differences(reference, sd)
    if parts:
        raise CheckpointError(
            f"{path} does not hold weights of this BiSeNetV2 model (expected {len(reference)} tensors, "
            f"file has {len(sd)}): " + "; ".join(parts)
        )
