"""OmegaConf resolvers our configs use; registered when any entry point is imported.

They must exist before `@hydra.main` composes the config, because Hydra resolves `hydra.run.dir` before
the task function runs; importing `bisenet_pl.cli` (every entry point does) registers them.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def _coalesce(*values: Any) -> Any:
    """The first value that is not null: `${bpl.coalesce:${resume},outputs/...}`."""
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _gpus_if_gpu(accelerator: Any, devices: Any) -> int:
    """GPUs to request from SLURM: the trainer's device count when it runs on GPU, else 0."""
    if str(accelerator) in ("cpu",):
        return 0
    try:
        return max(int(devices), 0)
    except (TypeError, ValueError):
        return 1


def register() -> None:
    for name, fn in (("bpl.coalesce", _coalesce), ("bpl.gpus_if_gpu", _gpus_if_gpu)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
