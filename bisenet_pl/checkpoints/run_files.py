"""Which checkpoint in a run folder is "the last one": the highest *stored* step among `last.ckpt`,
`last-interrupted.ckpt`, the iteration checkpoints and Lightning's SLURM `hpc_ckpt_*`, never the newest
file on disk (a failed start could have touched one). Read without loading the tensors. Training's
resume (`training.start`) and the run report (`reporting.runs`) both ask here (docs/resuming.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bisenet_pl.checkpoints.io import safe_load
from bisenet_pl.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
INTERRUPTED = "last-interrupted.ckpt"


@dataclass(frozen=True)
class StoredCheckpoint:
    path: Path
    step: int


def stored_step(path: Path) -> int | None:
    """The `global_step` a Lightning checkpoint records, read without loading its tensors; None if the
    file is not a readable training checkpoint."""
    try:
        obj = safe_load(path, mmap=True)
    except CheckpointError as err:
        log.warning("ignoring %s: %s", path, err)
        return None
    step = obj.get("global_step") if isinstance(obj, Mapping) else None
    return int(step) if isinstance(step, int) else None


def run_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint of the run: ours in `checkpoints/`, and the `hpc_ckpt_<n>.ckpt` that Lightning's
    own SLURM requeue (a hand-written sbatch script) writes into the run folder itself."""
    folder = Path(run_dir) / CHECKPOINTS
    ours = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    return ours + sorted(Path(run_dir).glob("hpc_ckpt_*.ckpt"))


def latest_checkpoint(run_dir: Path) -> StoredCheckpoint | None:
    """The run's checkpoint with the highest stored step; on a tie `last.ckpt`, then the interrupt one."""
    preference = {LAST: 0, INTERRUPTED: 1}
    best: tuple[int, int, Path] | None = None
    for path in run_checkpoints(run_dir):
        step = stored_step(path)
        if step is None:
            continue
        key = (step, -preference.get(path.name, 2), path)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else StoredCheckpoint(best[2], best[0])


__all__ = [
    "CHECKPOINTS",
    "INTERRUPTED",
    "LAST",
    "StoredCheckpoint",
    "latest_checkpoint",
    "run_checkpoints",
    "stored_step",
]
