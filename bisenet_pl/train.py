"""`python -m bisenet_pl.train experiment=<row> [overrides]`: train one row of mmseg's table.

Examples:
    python -m bisenet_pl.train experiment=demo                     # CPU, minutes, synthetic data
    python -m bisenet_pl.train experiment=ohem trainer.devices=4   # a table row on 4 GPUs
    python -m bisenet_pl.train resume=outputs/train/runs/<run>     # continue a killed run
    python -m bisenet_pl.train experiment=4x4 --cfg job            # print the composed config

The command composes the config and hands objects to each other: network, loss, LightningModule,
datamodule, callbacks, loggers and the Trainer are `_target_`s in `conf/`; how a run starts, resumes and
launches is `bisenet_pl.training` (`start`, `launch`, `run_folder`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from bisenet_pl.cli import CONFIG_PATH, hydra_output_dir, instantiate_dict, quiet_environment, readable_errors
from bisenet_pl.cli.training import build_module, build_trainer, overrides, plain, read_run_config, resumed

quiet_environment()

import hydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from bisenet_pl.checkpoints.io import atomic_write_text  # noqa: E402
from bisenet_pl.training import launch, start  # noqa: E402

log = logging.getLogger("bisenet_pl.train")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the final weights on val; returns the metrics. Rank zero locks the run folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from bisenet_pl.training.run_folder import RunLock, remove_stale_temporaries

    cfg = resumed(cfg) if cfg.get("resume") else cfg
    launch.check_hardware(plain(cfg.trainer), cfg.get("experiment_name"), cfg.get("amp_loss_scale"))
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    strategy = launch.multirun_strategy(plain(cfg.trainer), multirun)
    if strategy is not None:
        with open_dict(cfg):
            cfg.trainer.strategy = strategy
    run_dir = hydra_output_dir() or Path(cfg.paths.get("output_dir", "."))
    lock = RunLock(run_dir).acquire() if start.is_rank_zero() else None
    try:
        if lock is not None:
            remove_stale_temporaries(run_dir)
        saved = lambda: plain(read_run_config(run_dir / start.RUN_CONFIG))  # noqa: E731
        ckpt = start.checkpoint_to_start_from(
            cfg.get("ckpt_path"), bool(cfg.get("resume")), run_dir, saved, plain(cfg)
        )
        return _fit_and_test(cfg, run_dir, ckpt)
    finally:
        if lock is not None:
            lock.release()


def _fit_and_test(cfg: DictConfig, run_dir: Path, ckpt_path: str | None) -> dict[str, Any]:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from bisenet_pl.hardware import machine_info
    from bisenet_pl.training.callbacks import ResultsWriter
    from bisenet_pl.training.interrupts import GracefulStop, scalar_metrics

    pl.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # a wrong path fails in a second, before the model is built
    datamodule.first_file_check("train")
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    info = {"task": cfg.get("task_name"), "experiment": cfg.get("experiment_name"), "overrides": overrides(),
            "run_dir": str(run_dir), "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
            "machine": machine_info()}  # fmt: skip
    callbacks = [*instantiate_dict(cfg.get("callbacks"), "callbacks"), ResultsWriter(run_dir, info=info)]
    trainer = build_trainer(cfg, callbacks, instantiate_dict(cfg.get("logger"), "logger"))
    if ckpt_path is not None:
        start.check_resume_file(ckpt_path, module)
    if trainer.is_global_zero:
        atomic_write_text(OmegaConf.to_yaml(cfg), run_dir / start.RUN_CONFIG)
        for lg in trainer.loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    stop = GracefulStop()
    try:
        with stop.installed():
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:  # stopped at a batch boundary; last-interrupted.ckpt saved if a step trained
        raise SystemExit(stop.report(trainer, run_dir)) from None
    metrics = scalar_metrics(trainer)
    if cfg.get("test_after_fit") and not trainer.interrupted:  # the final weights, as mmseg's table
        trainer.test(module, datamodule=datamodule, ckpt_path=None, weights_only=True, verbose=False)
        metrics.update(scalar_metrics(trainer))
    if trainer.is_global_zero:
        log.info("run folder: %s\ncheckpoints: %s", run_dir, run_dir / "checkpoints")
        if cfg.get("report", True):  # report.html in the run folder (docs/report.md)
            from bisenet_pl.report import report_after

            report_after(run_dir, datamodule)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@readable_errors
def main(cfg: DictConfig) -> float | None:
    from bisenet_pl.training.loggers import finish_wandb, log_error_to_file

    try:
        metrics = train(cfg)
    except Exception as err:  # into train.log only (the console gets the message once)
        log_error_to_file(log, f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
        raise
    finally:
        finish_wandb()
    name = cfg.get("optimized_metric")
    value = metrics.get(name, metrics.get(name.replace("val/", "test/"))) if name else None
    return None if value is None or math.isnan(value) else float(value)


if __name__ == "__main__":
    main()
