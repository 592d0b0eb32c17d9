"""OmegaConf resolvers our configs use; registered when any entry point is imported.

They must exist before `@hydra.main` composes the config, because Hydra resolves `hydra.run.dir` before
the task function runs; importing `bisenet_pl.cli` (every entry point does) registers them.
"""

from __future__ import annotations

import os
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
        raise ValueError(
            f"hydra/launcher=slurm needs a number of devices per node, got trainer.devices={devices!r}: "
            "set e.g. trainer.devices=4 (one SLURM task per device)"
        ) from None


def _run_id(timestamp: str, overrides: Any = ()) -> str:
    """The run folder's name: `slurm-<job id>-<digest of the command line>` in a SLURM batch job, else
    the timestamp.

    Every rank of an sbatch + srun run, and a requeued job, compose the same overrides and so agree on one
    folder; a *different* run in the same job (another command line in one batch script) gets another
    folder instead of continuing the first one's checkpoints (docs/libraries.md). Interactive allocations
    (`salloc`/`srun --pty bash`, job name bash/interactive) keep timestamps; Lightning ignores SLURM there.
    """
    job = os.environ.get("SLURM_JOB_ID")
    if job and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return f"slurm-{job}-{run_digest(overrides)}"
    return timestamp


def run_digest(overrides: Any) -> str:
    """8 hex digits naming what a command line trains: its overrides, sorted, without the ones that only
    say where or how to start (hydra.*, resume, ckpt_path)."""
    import hashlib

    kept = sorted(
        str(o)
        for o in (overrides or ())
        if str(o).split("=", 1)[0].lstrip("+~").split(".", 1)[0] not in ("hydra", "resume", "ckpt_path")
    )
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:8]


def _cpu_precision(preferred: str = "bf16-mixed") -> str:
    """`preferred` when this CPU computes bf16 natively (AVX512-BF16/AMX), else "32-true": emulated bf16
    is slower than fp32, so the demo only asks for bf16 where it pays."""
    from bisenet_pl.hardware import cpu_has_native_bf16

    return preferred if cpu_has_native_bf16() else "32-true"


def _run_dir() -> str | None:
    """This Hydra run's output folder, or None outside a Hydra run (a config composed by a test or an
    API user): what a library object that records a file in the run folder is given."""
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def register() -> None:
    for name, fn in (
        ("bpl.coalesce", _coalesce),
        ("bpl.gpus_if_gpu", _gpus_if_gpu),
        ("bpl.run_id", _run_id),
        ("bpl.cpu_precision", _cpu_precision),
        ("bpl.run_dir", _run_dir),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
