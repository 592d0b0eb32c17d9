"""How a run starts: which checkpoint `fit` restores, whether a folder may be continued, and whether a
resume asks for the saved recipe (docs/resuming.md). Plain values in, no Hydra: `bisenet_pl.train`
hands over the composed config as a dict.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bisenet_pl.checkpoints.checks import check_tensors
from bisenet_pl.checkpoints.config import state_dict_differences
from bisenet_pl.checkpoints.io import safe_load
from bisenet_pl.errors import CheckpointError, ConfigError
from bisenet_pl.training.run_folder import config_differences, latest_checkpoint, refuse_fresh_start_over

log = logging.getLogger(__name__)

#: The composed (unresolved) config saved in every run folder; `resume=<run dir>` reads it back.
RUN_CONFIG = "run_config.yaml"
#: Keys a resume or a requeue may change: how to start, not what to train.
START_KEYS = ("resume", "ckpt_path", "hydra", "report")

_ABSENT = "<absent>"


def is_rank_zero() -> bool:
    """Before the Trainer exists: is this the process that owns the run folder? DDP children started by
    Lightning carry LOCAL_RANK/NODE_RANK, SLURM tasks SLURM_PROCID."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _select(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def refuse_recipe_changes(
    run_dir: Path, saved: Mapping[str, Any], asked: Mapping[str, Any], overrides: Sequence[str]
) -> None:
    """`resume=<run>` trains the saved recipe (else the LR schedule and step count would not continue as
    saved): an override on the resuming command line that changes it is refused, naming the keys."""
    changed = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0] in START_KEYS or "=" not in override:
            continue
        before, after = _select(saved, key), _select(asked, key)
        if before != after:
            changed.append(f"{key}: saved {before!r}, asked {after!r}")
    if changed:
        raise ConfigError(
            f"resume={run_dir} continues the saved run, whose config differs from this command line: "
            + "; ".join(changed)
            + ". Drop those overrides to resume, or start a new run with them (and ckpt_path=<file> to "
            "start from that run's weights and step)."
        )


def refuse_other_run(run_dir: Path, saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> None:
    """A folder may be continued only by the run it holds: same composed config, start keys aside."""
    if saved is None:
        return
    differences = config_differences(saved, current, ignore=START_KEYS)
    if differences:
        raise ConfigError(
            f"{run_dir} holds another run: its saved config differs from this one in "
            + "; ".join(differences[:8])
            + (f" (and {len(differences) - 8} more)" if len(differences) > 8 else "")
            + f". Resume it as it was with `resume={run_dir}`, or start this run in a new folder."
        )


def checkpoint_to_start_from(
    ckpt: str | None,
    resumed: bool,
    run_dir: Path,
    saved: Callable[[], Mapping[str, Any] | None],
    current: Mapping[str, Any],
) -> str | None:
    """The file `fit` restores, decided here and never by Lightning:

    - `ckpt_path=<file>`: that file (checked against the model once it is built: `check_resume_file`);
    - `ckpt_path=last` (what `resume=` sets), or a requeued SLURM job: the run's checkpoint with the
      highest stored step, after checking that the folder's saved config (`saved()`, read only then)
      is this run's;
    - nothing: a fresh run, refused in a folder that already holds checkpoints.
    """
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
    if ckpt is None and requeued:
        ckpt = "last"
        log.info(
            "requeued SLURM job (restart %s): resuming from %s", os.environ["SLURM_RESTART_COUNT"], run_dir
        )
    if ckpt is None:
        if is_rank_zero():
            refuse_fresh_start_over(run_dir)
        return None
    if str(ckpt) != "last":
        return str(ckpt)
    if not resumed:
        refuse_other_run(run_dir, saved(), current)
    latest = latest_checkpoint(run_dir)
    if latest is None:
        log.info("ckpt_path=last: no checkpoint in %s yet, starting from scratch", run_dir / "checkpoints")
        return None
    log.info("resuming from %s (step %d, the highest stored step in the run)", latest.path, latest.step)
    return str(latest.path)


def check_resume_file(path: str, module: Any) -> None:
    """`ckpt_path=<file>` restores optimizer, schedule and step: it must be a training checkpoint with
    finite weights of this model (names and shapes). A wrong file is one message here, read once
    (memory-mapped), not a traceback from inside `fit`."""
    obj = safe_load(Path(path), mmap=True)
    if not (isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "global_step" in obj):
        raise CheckpointError(
            f"ckpt_path={path} is not a training checkpoint written by bisenet_pl.train (it has no "
            "optimizer state or step to continue from); evaluate, predict and export read such files"
        )
    check_tensors(path, obj["state_dict"])
    parts = state_dict_differences(module.state_dict(), obj["state_dict"])
    if parts:
        raise CheckpointError(
            f"ckpt_path={path} is a checkpoint of another model: "
            + "; ".join(parts)
            + ". Resume with the config that wrote it (resume=<its run folder>)"
        )


__all__ = [
    "RUN_CONFIG",
    "START_KEYS",
    "check_resume_file",
    "checkpoint_to_start_from",
    "is_rank_zero",
    "refuse_other_run",
    "refuse_recipe_changes",
]
