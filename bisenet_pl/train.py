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
from typing import Any, cast

from bisenet_pl.cli import CONFIG_PATH, hydra_output_dir, instantiate_dict, quiet_environment, readable_errors

quiet_environment()

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from bisenet_pl.checkpoints.io import atomic_write_text  # noqa: E402
from bisenet_pl.errors import ConfigError  # noqa: E402
from bisenet_pl.training.interrupts import GracefulStop  # noqa: E402

log = logging.getLogger("bisenet_pl.train")

#: The composed (unresolved) config saved in every run folder; `resume=<run dir>` reads it back.
RUN_CONFIG = "run_config.yaml"


#: Keys a resume or a requeue may change: how to start, not what to train.
START_KEYS = ("resume", "ckpt_path", "hydra", "report")


def _load_resumed_config(cfg: DictConfig) -> DictConfig:
    """`resume=<run dir>`: the old run's own config, its folder and its latest checkpoint.

    A resumed run trains the saved recipe (otherwise the LR schedule and step count would not continue as
    saved), so an override on the resuming command line that changes it is refused, naming the keys.
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
    try:
        old = OmegaConf.load(saved)
    except Exception as err:
        raise ConfigError(f"resume={run_dir}: {saved} cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(old, DictConfig):
        raise ConfigError(f"resume={run_dir}: {saved} does not hold a config mapping")
    changed = []
    for override in _overrides():
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0] in START_KEYS or "=" not in override:
            continue
        before = OmegaConf.select(old, key, default="<absent>")
        after = OmegaConf.select(cfg, key, default="<absent>")
        if _plain(before) != _plain(after):
            changed.append(f"{key}: saved {_plain(before)!r}, asked {_plain(after)!r}")
    if changed:
        raise ConfigError(
            f"resume={run_dir} continues the saved run, whose config differs from this command line: "
            + "; ".join(changed)
            + ". Drop those overrides to resume, or start a new run with them (and ckpt_path=<file> to "
            "start from that run's weights and step)."
        )
    with open_dict(old):
        old.resume = str(run_dir)
        old.ckpt_path = "last"
    log.info("resuming %s with its saved config (%s)", run_dir, saved)
    return old


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=False)
    return value


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


def _check_hardware(cfg: DictConfig) -> None:
    """The trainer's request against this machine, before anything starts.

    A multi-GPU table row on a machine without a GPU would start N CPU processes on 1024x1024 crops
    (gigabytes, hours): stop, unless the CPU was asked for (`trainer.accelerator=cpu`). More CPU processes
    than cores, and fp16 on a CPU (Lightning runs bf16 there), are allowed but said."""
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    devices = cfg.trainer.get("devices", 1)
    several = devices == -1 or (isinstance(devices, int) and devices > 1)
    if accelerator in ("auto", "gpu", "cuda") and several and not torch.cuda.is_available():
        row = cfg.get("experiment_name") or "this experiment"
        raise ConfigError(
            f"{row} is a {devices}-GPU recipe and this machine has no CUDA GPU. Add trainer.accelerator=cpu "
            "to run it on CPU processes anyway (slow; e.g. a smoke test with trainer.max_steps=2), or try "
            "experiment=demo"
        )
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    cores = os.cpu_count() or 1
    if on_cpu and isinstance(devices, int) and devices > cores:
        log.warning(
            "trainer.devices=%d CPU processes on %d cores: each step is slower than one process",
            devices,
            cores,
        )
    precision = str(cfg.trainer.get("precision", "32-true"))
    if on_cpu and precision in ("16-mixed", "16", "16-true") and cfg.get("amp_loss_scale") is None:
        log.warning(
            "precision=%s on CPU: Lightning autocasts to bf16 there (no fp16 kernels on CPU)", precision
        )


def _is_rank_zero() -> bool:
    """Before the Trainer exists: is this the process that owns the run folder? DDP children started by
    Lightning carry LOCAL_RANK/NODE_RANK, SLURM tasks SLURM_PROCID."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _checkpoint_to_start_from(cfg: DictConfig, run_dir: Path) -> str | None:
    """The file `fit` restores, decided here and never by Lightning (docs/resuming.md).

    - `ckpt_path=<file>`: that file, checked first (readable, a training checkpoint, finite weights);
    - `ckpt_path=last` (what `resume=` sets), or a requeued SLURM job: the run's checkpoint with the
      highest stored step, after checking that the folder's saved config is this run's;
    - nothing: a fresh run, refused in a folder that already holds checkpoints.
    """
    from bisenet_pl.training.run_folder import latest_checkpoint, refuse_fresh_start_over

    ckpt = cfg.get("ckpt_path")
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
    if ckpt is None and requeued:
        ckpt = "last"
        log.info(
            "requeued SLURM job (restart %s): resuming from %s", os.environ["SLURM_RESTART_COUNT"], run_dir
        )
    if ckpt is None:
        if _is_rank_zero():
            refuse_fresh_start_over(run_dir)
        return None
    if str(ckpt) != "last":
        return str(ckpt)  # checked against the model once it is built (_check_resume_file)
    if not cfg.get("resume"):
        _refuse_other_run(cfg, run_dir)
    latest = latest_checkpoint(run_dir)
    if latest is None:
        log.info("ckpt_path=last: no checkpoint in %s yet, starting from scratch", run_dir / "checkpoints")
        return None
    log.info("resuming from %s (step %d, the highest stored step in the run)", latest.path, latest.step)
    return str(latest.path)


def _refuse_other_run(cfg: DictConfig, run_dir: Path) -> None:
    """A folder may be continued only by the run it holds: same composed config, start keys aside."""
    from bisenet_pl.training.run_folder import config_differences

    saved = run_dir / RUN_CONFIG
    if not saved.is_file():
        return
    try:
        old = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
    except Exception as err:
        raise ConfigError(f"{saved} cannot be read ({type(err).__name__}: {err})") from None
    now = OmegaConf.to_container(cfg, resolve=False)
    # Both are mappings: a composed config, and the run_config.yaml a run of ours wrote from one.
    differences = config_differences(
        cast("dict[str, Any]", old), cast("dict[str, Any]", now), ignore=START_KEYS
    )
    if differences:
        raise ConfigError(
            f"{run_dir} holds another run: its saved config differs from this one in "
            + "; ".join(differences[:8])
            + (f" (and {len(differences) - 8} more)" if len(differences) > 8 else "")
            + f". Resume it as it was with `resume={run_dir}`, or start this run in a new folder."
        )


def _check_resume_file(path: str, module: Any) -> None:
    """`ckpt_path=<file>` restores optimizer, schedule and step: it must be a training checkpoint with
    finite weights of this model (names and shapes). A wrong file is one message here, read once
    (memory-mapped), not a traceback from inside `fit`."""
    from bisenet_pl.checkpoints.checks import check_tensors
    from bisenet_pl.checkpoints.io import safe_load
    from bisenet_pl.errors import CheckpointError

    obj = safe_load(Path(path), mmap=True)
    if not (isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "global_step" in obj):
        raise CheckpointError(
            f"ckpt_path={path} is not a training checkpoint written by bisenet_pl.train (it has no "
            "optimizer state or step to continue from); evaluate, predict and export read such files"
        )
    stored = obj["state_dict"]
    check_tensors(path, stored)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    mismatched = [
        f"{k} {tuple(stored[k].shape)} vs {expected[k]}"
        for k in expected
        if k in stored and tuple(stored[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{len(items)} {what} (e.g. {', '.join(items[:3])})"
            for what, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("of another shape", mismatched),
            )
            if items
        ]
        raise CheckpointError(
            f"ckpt_path={path} is a checkpoint of another model: tensors "
            + "; ".join(parts)
            + ". Resume with the config that wrote it (resume=<its run folder>)"
        )


def _build_for(cfg: DictConfig, datamodule: Any) -> tuple[Any, Any, Any]:
    """Network, loss and LightningModule for this data: the data's class table is the one source of the
    class count, names, palette and ignore index (docs/own_data.md); `model.num_classes` may only repeat
    it (null: taken from the data)."""
    from hydra.utils import instantiate

    n = int(datamodule.num_classes)
    asked = cfg.model.get("num_classes")
    if asked is not None and int(asked) != n:
        raise ConfigError(
            f"model.num_classes={asked} but the data has {n} classes ({', '.join(datamodule.class_names[:6])}"
            f"{', ...' if n > 6 else ''}): leave model.num_classes out, the data decides it"
        )
    model = instantiate(cfg.model, num_classes=n)
    loss = instantiate(cfg.loss, ignore_index=int(datamodule.ignore_index))
    module = instantiate(
        cfg.module,
        model=model,
        loss=loss,
        class_names=list(datamodule.class_names),
        palette=datamodule.palette,
        ignore_index=int(datamodule.ignore_index),
        test_scale=list(datamodule.test_scale),
        _convert_="object",
    )
    return model, loss, module


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any]):
    """The Trainer of `cfg.trainer`, writing checkpoints atomically, with mmseg's static fp16 loss scale
    when asked for and submitit's (not Lightning's) SLURM requeue inside submitit jobs.

    Lightning's model summary table is off unless the config sets `trainer.enable_model_summary`: its
    FLOPs column reads 0 for a module without `example_input_array` (docs/libraries.md#console-output).
    `ParameterSummary` logs the parameter counts instead. The progress bar counts iterations out of
    `max_steps` (`IterationProgressBar`), continued across `resume=`."""
    from hydra.utils import instantiate

    from bisenet_pl.training.callbacks import AtomicCheckpointIO, ParameterSummary
    from bisenet_pl.training.progress import IterationProgressBar

    plugins = [AtomicCheckpointIO(), *_precision_plugins(cfg), *_cluster_plugins()]
    bar = [IterationProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    return instantiate(
        cfg.trainer,
        callbacks=[*callbacks, ParameterSummary(), *bar],
        logger=loggers or False,
        plugins=plugins,
        enable_model_summary=bool(cfg.trainer.get("enable_model_summary", False)),
        _convert_="object",
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the final weights on val; returns the test (or last val) metrics.

    The run folder is locked for the whole run (rank zero), so a second trainer on it is refused."""
    from bisenet_pl.training.run_folder import RunLock

    if cfg.get("resume"):
        cfg = _load_resumed_config(cfg)
    _check_hardware(cfg)
    _strategy_for_multirun(cfg)
    run_dir = hydra_output_dir() or Path(cfg.paths.get("output_dir", "."))
    lock = RunLock(run_dir).acquire() if _is_rank_zero() else None
    try:
        return _train_in(cfg, run_dir)
    finally:
        if lock is not None:
            lock.release()


def _train_in(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    import lightning.pytorch as pl
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from bisenet_pl.hardware import machine_info
    from bisenet_pl.training.callbacks import ResultsWriter
    from bisenet_pl.training.run_folder import remove_stale_temporaries

    if _is_rank_zero():
        remove_stale_temporaries(run_dir)
    ckpt_path = _checkpoint_to_start_from(cfg, run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    datamodule = instantiate(cfg.data)
    # Check the data before building anything heavy: a wrong path fails in a second, not after the model.
    datamodule.prepare_data()
    datamodule.first_file_check("train")
    datamodule.setup("fit")
    model, loss, module = _build_for(cfg, datamodule)
    callbacks = instantiate_dict(cfg.get("callbacks"), "callbacks")
    info = {
        "task": cfg.get("task_name"),
        "experiment": cfg.get("experiment_name"),
        "overrides": _overrides(),
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),  # the final weights the test reports
        "machine": machine_info(),
    }
    callbacks.append(ResultsWriter(run_dir, info=info))
    loggers = instantiate_dict(cfg.get("logger"), "logger")
    trainer = build_trainer(cfg, callbacks, loggers)
    if ckpt_path is not None:
        _check_resume_file(ckpt_path, module)
    if trainer.is_global_zero:
        atomic_write_text(OmegaConf.to_yaml(cfg), run_dir / RUN_CONFIG)
        for lg in trainer.loggers:
            if hasattr(lg, "log_hyperparams"):
                lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    stop = GracefulStop()
    try:
        with stop.installed():
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        # Lightning stopped at a batch boundary; InterruptCheckpoint saved last-interrupted.ckpt if a
        # step had trained.
        signum = stop.received or signal.SIGTERM
        if trainer.is_global_zero:
            saved = (run_dir / "checkpoints" / "last-interrupted.ckpt").is_file()
            log.warning(
                "%s: stopped at step %d%s. Resume with:\n  python -m bisenet_pl.train resume=%s",
                signal.Signals(signum).name,
                trainer.global_step,
                f", checkpoint saved in {run_dir / 'checkpoints'}" if saved else "",
                run_dir,
            )
        raise SystemExit(128 + signum) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if _is_scalar(v)}
    if cfg.get("test_after_fit") and not trainer.interrupted:
        # The final weights (what the last checkpoint holds), as mmseg's table reports
        # (docs/reproduction.md#table).
        trainer.test(module, datamodule=datamodule, ckpt_path=None, weights_only=True, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if _is_scalar(v)})
    if trainer.is_global_zero:
        log.info("run folder: %s", run_dir)
        log.info("checkpoints: %s", run_dir / "checkpoints")
        if cfg.get("report", True):  # report.html in the run folder (docs/report.md)
            from bisenet_pl.report import report_after

            report_after(run_dir, datamodule)
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


def _log_to_file(message: str) -> None:
    """An ERROR record for the run's log file only: a sweep report reads a failed job's error there."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@readable_errors
def main(cfg: DictConfig) -> float | None:
    from bisenet_pl.training.loggers import finish_wandb

    try:
        metrics = train(cfg)
    except Exception as err:  # into train.log only (the console gets the message once, below)
        _log_to_file(f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
        raise
    finally:
        finish_wandb()
    name = cfg.get("optimized_metric")
    value = metrics.get(name) if name else None
    if value is None and name:
        value = metrics.get(name.replace("val/", "test/"))
    return None if value is None or math.isnan(value) else float(value)


if __name__ == "__main__":
    main()
