"""Reading, writing and validating checkpoints: ours, Lightning's, and mmsegmentation's.

Three formats are recognised by `read_checkpoint`:
- **bisenet_pl** (`save_checkpoint`): self-describing, so inference needs nothing else:
  `{"format": "bisenet_pl", "format_version": 1, "model_config": ..., "state_dict": ...,
  "meta": {"classes", "palette", "mean", "std", ...}}`, plain containers and tensors only.
- **lightning**: a `.ckpt` written by training: `state_dict` keys prefixed `model.` (the
  LightningModule holds the Segmentor as `self.model`; other prefixes such as `loss_fn.` are
  ignored) and `ckpt["bisenet_pl"] = {"model_config": ..., "meta": ...}` when the module stored it.
- **mmseg**: `{"state_dict": ..., "meta": ..., "optimizer": ...}` or a bare state dict, keys as in
  mmseg's BiSeNetV2 (optionally prefixed `module.` by a DDP wrapper); `auxiliary_head.` becomes
  our `aux_heads.`.

Every file is read with `torch.load(..., map_location="cpu", weights_only=True)`: a checkpoint is
data, and a file that needs to run code to be unpickled is refused, never executed. Every problem
becomes one `CheckpointError` whose message names the file.
"""

from __future__ import annotations

import inspect
import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bisenet_pl.data.cityscapes import CLASSES, MEAN, PALETTE, STD
from bisenet_pl.errors import CheckpointError
from bisenet_pl.models.segmentor import Segmentor

FORMAT = "bisenet_pl"
FORMAT_VERSION = 1
MMSEG_AUX_PREFIX = "auxiliary_head."
AUX_PREFIX = "aux_heads."
LIGHTNING_MODEL_PREFIX = "model."
_SHOW = 5  # how many key names an error message lists

__all__ = [
    "CheckpointContents",
    "CheckpointError",
    "default_meta",
    "infer_model_config",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
]


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


# --------------------------------------------------------------------------------------------- meta


def default_meta(num_classes: int = len(CLASSES)) -> dict[str, Any]:
    """Cityscapes classes/palette and the normalisation the model was trained with (SPEC §7.3, §8).

    A model with another number of classes gets generic names and a grey-ramp palette, so that the
    meta always has one entry per output channel.
    """
    if num_classes == len(CLASSES):
        classes = list(CLASSES)
        palette = [list(c) for c in PALETTE]
    else:
        classes = [f"class_{i}" for i in range(num_classes)]
        palette = [[(i * 255) // max(num_classes - 1, 1)] * 3 for i in range(num_classes)]
    return {"classes": classes, "palette": palette, "mean": list(MEAN), "std": list(STD)}


def _plain(value: Any, where: str) -> Any:
    """Copy `value` as plain containers (tuples -> lists) or raise: files must load weights_only."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoints hold only plain containers "
        "(dict/list/str/int/float/bool/None) and tensors, so they load with weights_only=True"
    )


# --------------------------------------------------------------------------------------------- save


def save_checkpoint(
    model: Segmentor, path: str | os.PathLike[str], meta: dict[str, Any] | None = None
) -> Path:
    """Write `model` in our self-describing format, atomically; returns the path written.

    The file is first written to a temporary file in the destination folder and then moved over
    the destination with `os.replace` (atomic on POSIX and Windows), so an interrupted write leaves
    either the old file or no file, never a truncated one. `meta` entries override the defaults
    (classes, palette, mean, std) and must be plain containers.
    """
    if getattr(model, "is_fused", False):
        raise ValueError(
            "save_checkpoint() got a fused model (BN folded into convs): its state dict no longer matches "
            "Segmentor(**config); save the model before calling fuse()"
        )
    path = Path(path)
    full_meta = default_meta(model.num_classes)
    full_meta.update(meta or {})
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": _plain(model.config, "model_config"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": _plain(full_meta, "meta"),
    }
    try:
        atomic_torch_save(payload, path)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save` that never leaves a partial file at `path`.

    The bytes go to a temporary file in the destination folder (same filesystem, so the rename is
    atomic), are flushed and fsync'ed, and the file is then renamed over `path` with `os.replace`: a
    kill at any moment leaves the old file or the new one, never a truncated one, and no stray copy.
    Lightning's own writer stages through the system temp folder, which on a cluster is another
    filesystem than the run folder, where the final move is a non-atomic copy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; a checkpoint gets the usual permissions (0666 minus the umask), so
        # collaborators on a shared cluster filesystem can read it as they could any other file.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, path)
        tmp_name = None
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


# --------------------------------------------------------------------------------------------- load


def _describe_magic(head: bytes) -> str | None:
    """A human name for a few common non-checkpoint file types, from their first bytes."""
    magics = {
        b"\x89PNG": "a PNG image",
        b"\xff\xd8\xff": "a JPEG image",
        b"\x1f\x8b": "a gzip archive",
        b"%PDF": "a PDF document",
        b"GIF8": "a GIF image",
    }
    for magic, name in magics.items():
        if head.startswith(magic):
            return name
    return None


def _torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)` with every failure turned into one readable CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): not a PyTorch checkpoint")
    kind = _describe_magic(head)
    if kind is not None:
        raise CheckpointError(f"{path} is {kind}, not a PyTorch checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" in msg:
            marker = "GLOBAL "
            start = msg.find(marker)
            what = msg[start + len(marker) :].split(" ", 1)[0] if start >= 0 else "a Python object"
            raise CheckpointError(
                f"{path} is not a plain checkpoint: unpickling it would have to create {what} "
                "(i.e. run code from the file), and it will not be unpickled, for safety. "
                "Only tensors and plain containers are accepted (torch.load(weights_only=True)). If you "
                "trust the file, re-save just its weights, e.g. "
                "torch.save({'state_dict': ckpt['state_dict']}, 'weights.pth')."
            ) from None
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (or it is corrupt): it could not be read as one"
        ) from None
    except Exception as e:  # torch/zipfile/pickle raise many types for a bad file; none may escape
        reason = "it is truncated or corrupt" if head.startswith(b"PK") else "it could not be read as one"
        if isinstance(e, OSError) and e.strerror:
            reason = e.strerror
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {reason}") from None


def _strip_common_prefix(sd: dict[str, Any], prefix: str, renamed: dict[str, int]) -> dict[str, Any]:
    """Remove `prefix` when every key has it (a DDP `module.` or torch.compile `_orig_mod.` wrapper)."""
    if sd and all(k.startswith(prefix) for k in sd):
        renamed[f"'{prefix}' removed"] = len(sd)
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _to_our_names(sd: dict[str, Any], renamed: dict[str, int]) -> dict[str, Any]:
    """mmseg names -> ours: wrapper prefixes removed, `auxiliary_head.` -> `aux_heads.`."""
    for prefix in ("module.", "_orig_mod."):
        sd = _strip_common_prefix(sd, prefix, renamed)
    out = {}
    n_aux = 0
    for k, v in sd.items():
        if k.startswith(MMSEG_AUX_PREFIX):
            k = AUX_PREFIX + k[len(MMSEG_AUX_PREFIX) :]
            n_aux += 1
        out[k] = v
    if n_aux:
        renamed[f"'{MMSEG_AUX_PREFIX}' -> '{AUX_PREFIX}'"] = n_aux
    return out


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

    detail = []
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
    aux = []
    while (c := out_ch(f"{AUX_PREFIX}{len(aux)}.convs.0.conv.weight")) is not None:
        aux.append(c)
    if aux:
        config["aux_channels"] = aux
    return config


def _first(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (", ..." if len(names) > _SHOW else "")


def _check_against_model(path: Path, config: dict[str, Any], sd: Mapping[str, Any]) -> None:
    """Raise a CheckpointError naming missing/unexpected keys and shape mismatches, if any."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no init cost
            reference = Segmentor(**config).state_dict()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its model config {config!r} cannot build a Segmentor: {e}") from None
    missing = [k for k in reference if k not in sd]
    unexpected = [k for k in sd if k not in reference]
    bad_shape = [
        f"{k} (file {tuple(sd[k].shape)}, model {tuple(reference[k].shape)})"
        for k in reference
        if k in sd
        and (not isinstance(sd[k], torch.Tensor) or tuple(sd[k].shape) != tuple(reference[k].shape))
    ]
    if not (missing or unexpected or bad_shape):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    if bad_shape:
        parts.append(f"{len(bad_shape)} shape mismatch(es): {_first(bad_shape)}")
    raise CheckpointError(
        f"{path} does not hold weights of this BiSeNetV2 model (expected {len(reference)} tensors, "
        f"file has {len(sd)}): " + "; ".join(parts)
    )


def _mmseg_meta(raw_meta: Any, num_classes: int) -> dict[str, Any]:
    """Our meta from an mmseg checkpoint's meta: classes/palette when they fit, plain scalars kept."""
    meta = default_meta(num_classes)
    if not isinstance(raw_meta, Mapping):
        return meta
    dataset_meta = raw_meta.get("dataset_meta") if isinstance(raw_meta.get("dataset_meta"), Mapping) else {}
    classes = raw_meta.get("CLASSES") or dataset_meta.get("classes")
    palette = raw_meta.get("PALETTE") or dataset_meta.get("palette")
    if isinstance(classes, list | tuple) and len(classes) == num_classes:
        meta["classes"] = [str(c) for c in classes]
    if isinstance(palette, list | tuple) and len(palette) == num_classes:
        try:
            meta["palette"] = [[int(v) for v in c] for c in palette]
        except (TypeError, ValueError):
            pass
    # provenance: keep small plain values (iteration, versions, time), not the config/env blobs
    kept = {
        k: v
        for k, v in raw_meta.items()
        if isinstance(k, str) and k not in ("config", "env_info") and isinstance(v, bool | int | float | str)
    }
    if kept:
        meta["mmseg_meta"] = kept
    return meta


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointContents:
    """Read ours, a Lightning `.ckpt` or an mmseg checkpoint; validate it against the model.

    The returned state dict uses our key names and is checked (keys and shapes) against a
    Segmentor built from the returned config, so `Segmentor(**c.model_config).load_state_dict(
    c.state_dict)` cannot fail. Raises `CheckpointError` (message names the file) otherwise.
    """
    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a checkpoint dict (state dict or "
            "{'state_dict': ...})"
        )
    renamed: dict[str, int] = {}
    skipped: list[str] = []
    stored: Mapping[str, Any] | None = None

    if obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"{path} is a bisenet_pl checkpoint of format version {version!r}; this bisenet_pl "
                f"reads version {FORMAT_VERSION} and older: upgrade bisenet_pl"
            )
        source = FORMAT
        stored = obj
        sd = obj.get("state_dict")
        skipped = [
            k for k in obj if k not in ("format", "format_version", "model_config", "state_dict", "meta")
        ]
    elif isinstance(obj.get("state_dict"), Mapping) and (
        "pytorch-lightning_version" in obj
        or FORMAT in obj
        or any(str(k).startswith(LIGHTNING_MODEL_PREFIX) for k in obj["state_dict"])
    ):
        source = "lightning"
        stored = obj.get(FORMAT) if isinstance(obj.get(FORMAT), Mapping) else None
        full = obj["state_dict"]
        sd = {
            k[len(LIGHTNING_MODEL_PREFIX) :]: v
            for k, v in full.items()
            if k.startswith(LIGHTNING_MODEL_PREFIX)
        }
        if sd:
            renamed[f"'{LIGHTNING_MODEL_PREFIX}' removed"] = len(sd)
            others: dict[str, int] = {}
            for k in full:
                if not k.startswith(LIGHTNING_MODEL_PREFIX):
                    group = k.split(".", 1)[0] + ".*"
                    others[group] = others.get(group, 0) + 1
            skipped = [f"state_dict entries {g} ({n} tensors)" for g, n in others.items()]
        else:  # a LightningModule that holds the network under another name: take what is there
            sd = dict(full)
        skipped += [k for k in obj if k not in ("state_dict", FORMAT)]
        sd = _to_our_names(sd, renamed)
    elif isinstance(obj.get("state_dict"), Mapping):
        source = "mmseg"
        sd = _to_our_names(dict(obj["state_dict"]), renamed)
        skipped = [k for k in obj if k not in ("state_dict", "meta")]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        source = "mmseg"
        sd = _to_our_names(dict(obj), renamed)
    else:
        keys = [str(k) for k in obj]
        raise CheckpointError(
            f"{path} is not a model checkpoint: it has no 'state_dict' and is not a bare state dict "
            f"(top-level keys: {_first(keys) or 'none'})"
        )

    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{path}: its state dict is missing or empty")
    sd = dict(sd)
    if not all(isinstance(k, str) for k in sd):
        raise CheckpointError(f"{path}: its state dict has non-string keys")

    inferred = infer_model_config(sd)
    if stored is not None and isinstance(stored.get("model_config"), Mapping) and stored["model_config"]:
        config = dict(stored["model_config"])
    elif source == FORMAT:
        raise CheckpointError(f"{path}: bisenet_pl checkpoint without a 'model_config' dict")
    else:
        config = inferred
    _check_against_model(path, config, sd)

    num_classes = int(config.get("num_classes", len(CLASSES)))
    if stored is not None and isinstance(stored.get("meta"), Mapping):
        meta = default_meta(num_classes)
        meta.update(stored["meta"])
    elif source == "mmseg":
        meta = _mmseg_meta(obj.get("meta"), num_classes)
    else:
        meta = default_meta(num_classes)
    return CheckpointContents(
        model_config=config,
        state_dict=sd,
        meta=meta,
        source_format=source,
        path=path,
        renamed=renamed,
        skipped=skipped,
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
