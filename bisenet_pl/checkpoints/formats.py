"""The three checkpoint formats we read, and the one we write.

- **bisenet_pl** (`save_checkpoint`): self-describing, so inference needs nothing else:
  `{"format": "bisenet_pl", "format_version": 1, "model_config": ..., "state_dict": ...,
  "meta": {"classes", "palette", "mean", "std", ...}}`, plain containers and tensors only.
- **lightning**: a `.ckpt` written by training: `state_dict` keys prefixed `model.` (the
  LightningModule holds the Segmentor as `self.model`; other prefixes such as `loss_fn.` are
  ignored) and `ckpt["bisenet_pl"] = {"model_config": ..., "meta": ...}` when the module stored it.
- **mmseg**: `{"state_dict": ..., "meta": ..., "optimizer": ...}` or a bare state dict, keys as in
  mmseg's BiSeNetV2 (see `bisenet_pl.checkpoints.mmseg`).

Each format has its reader; `read_checkpoint` picks one by the file's shape and then validates the
result against the model the file describes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bisenet_pl.checkpoints.checks import check_meta, check_tensors
from bisenet_pl.checkpoints.config import check_against_model, first_names, infer_model_config
from bisenet_pl.checkpoints.io import atomic_torch_save, plain, safe_load
from bisenet_pl.checkpoints.meta import complete_meta
from bisenet_pl.checkpoints.mmseg import mmseg_meta, to_our_names
from bisenet_pl.data.cityscapes import CLASSES
from bisenet_pl.errors import CheckpointError
from bisenet_pl.models.segmentor import Segmentor

FORMAT = "bisenet_pl"
FORMAT_VERSION = 1
LIGHTNING_MODEL_PREFIX = "model."


@dataclass
class CheckpointContents:
    """What a checkpoint holds, in our terms, whatever format it came from.

    `state_dict` uses our key names (`aux_heads.` not `auxiliary_head.`, no `module.`/`model.`).
    `renamed` counts the keys per prefix rewrite and `skipped` lists what was not used (optimizer
    state, other LightningModule attributes...): both only inform the user (`bisenet_pl.convert`).
    """

    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    source_format: str
    path: Path | None = None
    renamed: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def save_checkpoint(
    model: Segmentor, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None
) -> Path:
    """Write `model` in our self-describing format, atomically; returns the path written.

    `meta` entries override the defaults (classes, palette, mean, std) and must be plain containers,
    so that the file loads with `weights_only=True`.
    """
    if getattr(model, "is_fused", False):
        raise ValueError(
            "save_checkpoint() got a fused model (BN folded into convs): its state dict no longer matches "
            "Segmentor(**config); save the model before calling fuse()"
        )
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": plain(model.config, "model_config"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": plain(complete_meta(model.num_classes, meta), "meta"),
    }
    try:
        atomic_torch_save(payload, path)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    return path


@dataclass
class _Read:
    """One reader's result before validation: our-named state dict, the stored config/meta if any."""

    source: str
    state_dict: Any
    stored: Mapping[str, Any] | None = None
    renamed: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _read_ours(path: Path, obj: Mapping[str, Any]) -> _Read:
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is a bisenet_pl checkpoint of format version {version!r}; this bisenet_pl "
            f"reads version {FORMAT_VERSION} and older: upgrade bisenet_pl"
        )
    known = ("format", "format_version", "model_config", "state_dict", "meta")
    return _Read(FORMAT, obj.get("state_dict"), stored=obj, skipped=[k for k in obj if k not in known])


def _is_lightning(obj: Mapping[str, Any]) -> bool:
    return isinstance(obj.get("state_dict"), Mapping) and (
        "pytorch-lightning_version" in obj
        or FORMAT in obj
        or any(str(k).startswith(LIGHTNING_MODEL_PREFIX) for k in obj["state_dict"])
    )


def _read_lightning(path: Path, obj: Mapping[str, Any]) -> _Read:
    stored = obj.get(FORMAT) if isinstance(obj.get(FORMAT), Mapping) else None
    full = obj["state_dict"]
    n = len(LIGHTNING_MODEL_PREFIX)
    sd = {k[n:]: v for k, v in full.items() if k.startswith(LIGHTNING_MODEL_PREFIX)}
    renamed: dict[str, int] = {}
    skipped: list[str] = []
    if sd:
        renamed[f"'{LIGHTNING_MODEL_PREFIX}' removed"] = len(sd)
        others: dict[str, int] = {}
        for k in full:
            if not k.startswith(LIGHTNING_MODEL_PREFIX):
                group = k.split(".", 1)[0] + ".*"
                others[group] = others.get(group, 0) + 1
        skipped = [f"state_dict entries {g} ({c} tensors)" for g, c in others.items()]
    else:  # a LightningModule that holds the network under another name: take what is there
        sd = dict(full)
    skipped += [k for k in obj if k not in ("state_dict", FORMAT)]
    return _Read("lightning", to_our_names(sd, renamed), stored, renamed, skipped)


def _read_mmseg(path: Path, obj: Mapping[str, Any]) -> _Read:
    renamed: dict[str, int] = {}
    if isinstance(obj.get("state_dict"), Mapping):
        skipped = [k for k in obj if k not in ("state_dict", "meta")]
        return _Read("mmseg", to_our_names(dict(obj["state_dict"]), renamed), None, renamed, skipped)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _Read("mmseg", to_our_names(dict(obj), renamed), None, renamed)
    keys = [str(k) for k in obj]
    raise CheckpointError(
        f"{path} is not a model checkpoint: it has no 'state_dict' and is not a bare state dict "
        f"(top-level keys: {first_names(keys) or 'none'})"
    )


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointContents:
    """Read ours, a Lightning `.ckpt` or an mmseg checkpoint; validate it against the model.

    The returned state dict uses our key names and is checked (keys and shapes) against a
    Segmentor built from the returned config, so `Segmentor(**c.model_config).load_state_dict(
    c.state_dict)` cannot fail. Raises `CheckpointError` (message names the file) otherwise.
    """
    path = Path(path)
    obj = safe_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a checkpoint dict (state dict or "
            "{'state_dict': ...})"
        )
    if obj.get("format") == FORMAT:
        read = _read_ours(path, obj)
    elif _is_lightning(obj):
        read = _read_lightning(path, obj)
    else:
        read = _read_mmseg(path, obj)

    sd = read.state_dict
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{path}: its state dict is missing or empty")
    sd = dict(sd)
    if not all(isinstance(k, str) for k in sd):
        raise CheckpointError(f"{path}: its state dict has non-string keys")
    check_tensors(path, sd)

    stored = read.stored
    if stored is not None and isinstance(stored.get("model_config"), Mapping) and stored["model_config"]:
        config = dict(stored["model_config"])
    elif read.source == FORMAT:
        raise CheckpointError(f"{path}: bisenet_pl checkpoint without a 'model_config' dict")
    else:
        config = infer_model_config(sd)
    check_against_model(path, config, sd)

    num_classes = int(config.get("num_classes", len(CLASSES)))
    if stored is not None and isinstance(stored.get("meta"), Mapping):
        meta = complete_meta(num_classes, stored["meta"])
    elif read.source == "mmseg":
        meta = mmseg_meta(obj.get("meta"), num_classes)
    else:
        meta = complete_meta(num_classes)
    check_meta(path, meta, num_classes)
    return CheckpointContents(
        model_config=config,
        state_dict=sd,
        meta=meta,
        source_format=read.source,
        path=path,
        renamed=read.renamed,
        skipped=read.skipped,
    )


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Segmentor:
    """A Segmentor in eval mode from any checkpoint `read_checkpoint` understands.

    Inference-only checkpoints (no aux-head weights) give `aux_heads=False`. The checkpoint's meta
    (classes, palette, mean, std) is attached as `model.meta` for predict/visualisation code.
    """
    contents = read_checkpoint(path)
    model = Segmentor(**contents.model_config)
    try:
        model.load_state_dict(contents.state_dict, strict=True)
    except RuntimeError as e:  # validated above; kept so no library traceback ever escapes
        raise CheckpointError(f"{contents.path}: weights do not fit the model: {e}") from None
    model.meta = contents.meta
    return model.to(device).eval()
