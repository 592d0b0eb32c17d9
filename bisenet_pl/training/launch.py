"""The trainer's request against this machine and this launcher, decided before anything starts: is the
hardware there, how DDP ranks start inside a sweep, mmseg's static fp16 loss scale, and whose SLURM
requeue applies. Plain values in, no Hydra (`bisenet_pl.train` passes `cfg.trainer` as a dict).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from bisenet_pl.errors import ConfigError

log = logging.getLogger(__name__)


def _several(devices: Any) -> bool:
    return devices == -1 or devices == "auto" or (isinstance(devices, int) and devices > 1)


def _on_cpu(accelerator: str) -> bool:
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def check_hardware(trainer: Mapping[str, Any], experiment: str | None, amp_loss_scale: float | None) -> None:
    """A multi-GPU table row on a machine without a GPU would start N CPU processes on 1024x1024 crops
    (gigabytes, hours): stop, unless the CPU was asked for (`trainer.accelerator=cpu`). More CPU processes
    than cores, and fp16 on a CPU (Lightning runs bf16 there), are allowed but said."""
    accelerator = str(trainer.get("accelerator", "auto"))
    devices = trainer.get("devices", 1)
    if accelerator in ("auto", "gpu", "cuda") and devices != "auto" and _several(devices):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{experiment or 'this experiment'} is a {devices}-GPU recipe and this machine has no CUDA "
                "GPU. Add trainer.accelerator=cpu to run it on CPU processes anyway (slow; e.g. a smoke test "
                "with trainer.max_steps=2), or try experiment=demo"
            )
    cores = os.cpu_count() or 1
    if _on_cpu(accelerator) and isinstance(devices, int) and devices > cores:
        log.warning(
            "trainer.devices=%d CPU processes on %d cores: each step is slower than one process",
            devices,
            cores,
        )
    precision = str(trainer.get("precision", "32-true"))
    if _on_cpu(accelerator) and precision in ("16-mixed", "16", "16-true") and amp_loss_scale is None:
        log.warning(
            "precision=%s on CPU: Lightning autocasts to bf16 there (no fp16 kernels on CPU)", precision
        )


def multirun_strategy(trainer: Mapping[str, Any], multirun: bool) -> Any:
    """The strategy a sweep job must use, or None to keep the configured one.

    Plain `ddp` re-runs the command line in each child: inside `-m` that re-runs the whole sweep
    (docs/libraries.md). Locally a sweep job with several devices therefore spawns its ranks instead;
    under SLURM (one task per device) Lightning launches nothing and `ddp` is safe.
    """
    devices = trainer.get("devices", 1)
    several = _several(devices) or int(trainer.get("num_nodes", 1)) > 1
    if not multirun or not several or "SLURM_JOB_ID" in os.environ:
        return None
    strategy = trainer.get("strategy", "auto")
    log.warning("multirun with %s devices: DDP ranks are spawned (ddp_spawn), not re-launched", devices)
    if isinstance(strategy, str):
        if strategy in ("ddp", "auto"):
            return "ddp_spawn"
        if strategy in ("ddp_spawn", "ddp_fork", "ddp_notebook"):
            return None
        raise ConfigError(
            f"trainer.strategy={strategy} inside a multirun with several devices: use ddp_spawn locally or "
            "hydra/launcher=slurm"
        )
    if "DDPStrategy" in str(strategy.get("_target_", "")):
        return {**strategy, "start_method": "spawn"}
    return None


def precision_plugins(trainer: Mapping[str, Any], amp_loss_scale: float | None) -> list[Any]:
    """mmseg's fp16 row uses a static loss scale of 512 (docs/reproduction.md#fp16); Lightning's scaler
    is dynamic. When a plugin is returned it carries the precision: the Trainer gets `precision=None`."""
    precision = str(trainer.get("precision", "32-true"))
    if amp_loss_scale is None or precision not in ("16-mixed", "16"):
        return []
    if _on_cpu(str(trainer.get("accelerator", "auto"))):
        log.warning("precision=16-mixed on CPU runs as bf16 without a loss scale (Lightning's behaviour)")
        return []
    from lightning.pytorch.plugins import MixedPrecision

    from bisenet_pl.training.amp import StaticGradScaler

    return [MixedPrecision("16-mixed", "cuda", scaler=StaticGradScaler(float(amp_loss_scale)))]


def cluster_plugins() -> list[Any]:
    """Inside a submitit SLURM job, requeueing is submitit's (USR2, same job folder, `ckpt_path=last`):
    Lightning's own USR1 auto-requeue is switched off so a job is never requeued twice (docs/libraries.md).
    A hand-written sbatch script keeps Lightning's requeue (docs/slurm.md)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


__all__ = ["check_hardware", "cluster_plugins", "multirun_strategy", "precision_plugins"]
