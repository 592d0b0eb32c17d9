"""mmsegmentation's checkpoint conventions, translated to ours.

mmseg names the aux heads `auxiliary_head.N`, we name them `aux_heads.N`; every other key is mmseg's own.
A DDP wrapper adds `module.`, torch.compile `_orig_mod.`. Released files carry `meta` with the dataset's
classes and palette (`CLASSES`/`PALETTE` in v0.x, `dataset_meta` in 1.x).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bisenet_pl.checkpoints.meta import default_meta

MMSEG_AUX_PREFIX = "auxiliary_head."


AUX_PREFIX = "aux_heads."


def _strip_common_prefix(sd: dict[str, Any], prefix: str, renamed: dict[str, int]) -> dict[str, Any]:
    """Remove `prefix` when every key has it (a DDP `module.` or torch.compile `_orig_mod.` wrapper)."""
    if sd and all(k.startswith(prefix) for k in sd):
        renamed[f"'{prefix}' removed"] = len(sd)
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def to_our_names(sd: dict[str, Any], renamed: dict[str, int]) -> dict[str, Any]:
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


def mmseg_meta(raw_meta: Any, num_classes: int) -> dict[str, Any]:
    """Our meta from an mmseg checkpoint's meta: classes/palette when they fit, plain scalars kept."""
    meta = default_meta(num_classes)
    if not isinstance(raw_meta, Mapping):
        return meta
    raw_dataset_meta = raw_meta.get("dataset_meta")
    dataset_meta: Mapping[Any, Any] = raw_dataset_meta if isinstance(raw_dataset_meta, Mapping) else {}
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
