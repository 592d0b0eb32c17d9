"""`python -m bisenet_pl.train experiment=<row> [overrides]`: train one row of mmseg's table.

Examples:
    python -m bisenet_pl.train experiment=demo                     # CPU, minutes, synthetic data
    python -m bisenet_pl.train experiment=ohem trainer.devices=4   # a table row on 4 GPUs
    python -m bisenet_pl.train resume=outputs/train/runs/<run>     # continue a killed run
    python -m bisenet_pl.train experiment=4x4 --cfg job            # print the composed config

The entry point only composes the config and hands objects to each other (DESIGN.md): network, loss,
LightningModule, datamodule, callbacks, loggers and the Trainer are all `_target_`s in `conf/`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bisenet_pl.cli import CONFIG_PATH, hydra_output_dir, instantiate_dict, quiet_environment, readable_errors

quiet_environment()

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from bisenet_pl.errors import ConfigError  # noqa: E402

log = logging.getLogger("bisenet_pl.train")

#: The composed (unresolved) config saved in every run folder; `resume=<run dir>` reads it back.
RUN_CONFIG = "run_config.yaml"


def _load_resumed_config(cfg: DictConfig) -> DictConfig:
    """`resume=<run dir>`: the old run's own config, its folder and its `last.ckpt`.

    The command-line overrides of the resuming call are ignored except `resume` itself: a resumed run
    must train the same recipe, or the LR schedule and step count would not continue as saved.
    """
    run_dir = Path(cfg.resume)
    saved = run_dir / RUN_CONFIG
    if not run_dir.is_dir():
        raise ConfigError(f"resume={run_dir}: no such run folder")
    if not saved.is_file():
        raise ConfigError(
            f"resume={run_dir}: {saved.name} is missing, so this is not a bisenet_pl run folder. To resume "
            f"by hand, repeat the original overrides and add `hydra.run.dir={run_dir} ckpt_path=last`."
        )
    old = OmegaConf.load(saved)
    with open_dict(old):
        old.resume = str(run_dir)
        old.ckpt_path = "last"
    log.info("resuming %s with its saved config (%s)", run_dir, saved)
    return old  # type: ignore[return-value]


def _strategy_for_multirun(cfg: DictConfig) -> None:
    """Plain `ddp` re-runs the command line in each child: inside `-m` that re-runs the whole sweep
    (docs/libraries.md). Locally a sweep job with several devices therefore spawns its ranks instead;
    under SLURM (one task per device) Lightning launches nothing and `ddp` is safe.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return
    devices = cfg.trainer.get("devices", 1)
    several = devices == -1 or devices == "auto" or (isinstance(devices, int) and devices > 1)
    several = several or int(cfg.trainer.get("num_nodes", 1)) > 1
    if not multirun or not several or "SLURM_JOB_ID" in os.environ:
        return
    strategy = cfg.trainer.strategy
    with open_dict(cfg):
        if isinstance(strategy, str):
            if strategy in ("ddp", "auto"):
                cfg.trainer.strategy = "ddp_spawn"
            elif strategy not in ("ddp_spawn", "ddp_fork", "ddp_notebook"):
                raise ConfigError(
                    f"trainer.strategy={strategy} inside a multirun with several devices: use ddp_spawn "
                    "locally or hydra/launcher=slurm"
                )
        elif "DDPStrategy" in str(strategy.get("_target_", "")):
            cfg.trainer.strategy.start_method = "spawn"
    log.warning("multirun with %s devices: DDP ranks are spawned (ddp_spawn), not re-launched", devices)


def _precision_plugins(cfg: DictConfig) -> list[Any]:
    """mmseg's fp16 row uses a static loss scale of 512 (docs/reproduction.md#schedule); Lightning's scaler
    is dynamic."""
    scale = cfg.get("amp_loss_scale")
    precision = str(cfg.trainer.get("precision", "32-true"))
    if scale is None or precision not in ("16-mixed", "16"):
        return []
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        log.warning("precision=16-mixed on CPU runs as bf16 without a loss scale (Lightning's behaviour)")
        return []
    from lightning.pytorch.plugins import MixedPrecision

    from bisenet_pl.training.amp import StaticGradScaler

    with open_dict(cfg):
        cfg.trainer.precision = None  # the plugin carries the precision
    return [MixedPrecision("16-mixed", "cuda", scaler=StaticGradScaler(float(scale)))]


def _cluster_plugins() -> list[Any]:
    """Inside a submitit SLURM job, requeueing is submitit's (USR2, same job folder, `ckpt_path=last`):
    Lightning's own USR1 auto-requeue is switched off so a job is never requeued twice (docs/libraries.md).
    A hand-written sbatch script keeps Lightning's requeue (docs/slurm.md)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def _requeued_checkpoint(run_dir: Path) -> str | None:
    """A SLURM job that was requeued (timeout, preemption) continues from its folder's last checkpoint
    even when the command line did not say `ckpt_path=last`; elsewhere a run never resumes by surprise."""
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
    if requeued and any((run_dir / "checkpoints").glob("last*.ckpt")):
        log.info("requeued SLURM job: resuming from the last checkpoint in %s", run_dir / "checkpoints")
        return "last"
    return None


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any]):
    """The Trainer of `cfg.trainer`, writing checkpoints atomically, with mmseg's static fp16 loss scale
    when asked for and submitit's (not Lightning's) SLURM requeue inside submitit jobs."""
    from hydra.utils import instantiate

    from bisenet_pl.training.callbacks import AtomicCheckpointIO

    plugins = [AtomicCheckpointIO(), *_precision_plugins(cfg), *_cluster_plugins()]
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins, _convert_="object"
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the final weights on val; returns the test (or last val) metrics."""
    import lightning.pytorch as pl
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from bisenet_pl.training.callbacks import ResultsWriter

    if cfg.get("resume"):
        cfg = _load_resumed_config(cfg)
    _strategy_for_multirun(cfg)
    run_dir = hydra_output_dir() or Path(cfg.paths.get("output_dir", "."))
    pl.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    datamodule = instantiate(cfg.data)
    # Check the data before building anything heavy: a wrong path fails in a second, not after the model.
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = instantiate(cfg.model)
    loss = instantiate(cfg.loss)
    module = instantiate(cfg.module, model=model, loss=loss, _convert_="object")
    callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
    info = {
        "task": cfg.get("task_name"),
        "experiment": cfg.get("experiment_name"),
        "overrides": _overrides(),
        "run_dir": str(run_dir),
    }
    callbacks.append(ResultsWriter(run_dir, info=info))
    loggers = instantiate_dict(cfg.get("logger"), "logger")
    trainer = build_trainer(cfg, callbacks, loggers)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / RUN_CONFIG)
        for lg in trainer.loggers:
            if hasattr(lg, "log_hyperparams"):
                lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    ckpt_path = cfg.get("ckpt_path") or _requeued_checkpoint(run_dir)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        # Lightning stopped at a batch boundary and OnExceptionCheckpoint saved last-interrupted.ckpt.
        if trainer.is_global_zero:
            log.warning(
                "SIGTERM: stopped at step %d, checkpoint saved in %s. Resume with:\n"
                "  python -m bisenet_pl.train resume=%s",
                trainer.global_step,
                run_dir / "checkpoints",
                run_dir,
            )
        raise SystemExit(128 + signal.SIGTERM) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if _is_scalar(v)}
    if cfg.get("test_after_fit") and not trainer.interrupted:
        # The final weights (what the last checkpoint holds), as mmseg's table reports
        # (docs/reproduction.md#table).
        trainer.test(module, datamodule=datamodule, ckpt_path=None, weights_only=True, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if _is_scalar(v)})
    if trainer.is_global_zero:
        log.info("run folder: %s", run_dir)
        log.info("checkpoints: %s", run_dir / "checkpoints")
    return metrics


def _is_scalar(value: Any) -> bool:
    try:
        return value.numel() == 1
    except AttributeError:
        return isinstance(value, (int, float))


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return sys.argv[1:]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@readable_errors
def main(cfg: DictConfig) -> float | None:
    from bisenet_pl.training.loggers import finish_wandb

    try:
        metrics = train(cfg)
    finally:
        finish_wandb()
    name = cfg.get("optimized_metric")
    value = metrics.get(name) if name else None
    if value is None and name:
        value = metrics.get(name.replace("val/", "test/"))
    return None if value is None or math.isnan(value) else float(value)


if __name__ == "__main__":
    main()
