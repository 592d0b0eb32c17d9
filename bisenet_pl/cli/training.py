"""The train command's Hydra glue: a resumed run's saved config, the Trainer and the LightningModule
built from the composed config. Only `bisenet_pl.train` imports this; the decisions themselves are
`bisenet_pl.training.start` and `.launch` (plain values, no Hydra)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from bisenet_pl.errors import ConfigError
from bisenet_pl.training import launch, start

log = logging.getLogger("bisenet_pl.train")


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node


def read_run_config(path: Path) -> DictConfig | None:
    """A run folder's saved config, or None where there is none; unreadable is one error naming it."""
    if not path.is_file():
        return None
    try:
        saved = OmegaConf.load(path)
    except Exception as err:
        raise ConfigError(f"{path} cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(saved, DictConfig):
        raise ConfigError(f"{path} does not hold a config mapping")
    return saved


def resumed(cfg: DictConfig) -> DictConfig:
    """`resume=<run dir>`: the run's own config, its folder and its latest checkpoint."""
    run_dir = Path(cfg.resume)
    if not run_dir.is_dir():
        raise ConfigError(f"resume={run_dir}: no such run folder")
    saved = read_run_config(run_dir / start.RUN_CONFIG)
    if saved is None:
        raise ConfigError(
            f"resume={run_dir}: {start.RUN_CONFIG} is missing, so this is not a bisenet_pl run folder. To "
            f"resume by hand, repeat the original overrides and add `hydra.run.dir={run_dir} ckpt_path=last`."
        )
    start.refuse_recipe_changes(run_dir, plain(saved), plain(cfg), overrides())
    with open_dict(saved):
        saved.resume, saved.ckpt_path = str(run_dir), "last"
    log.info("resuming %s with its saved config (%s)", run_dir, run_dir / start.RUN_CONFIG)
    return saved


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any]) -> Any:
    """The Trainer of `cfg.trainer`: checkpoints written atomically, mmseg's static fp16 loss scale when
    asked for, submitit's SLURM requeue in submitit jobs, parameter counts instead of Lightning's model
    table (docs/libraries.md#console-output), and a progress bar over the run's iterations."""
    from bisenet_pl.training.callbacks import AtomicCheckpointIO, ParameterSummary
    from bisenet_pl.training.progress import IterationProgressBar

    precision = launch.precision_plugins(plain(cfg.trainer), cfg.get("amp_loss_scale"))
    extra = {"precision": None} if precision else {}  # the plugin carries the precision
    bar = [IterationProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    return instantiate(
        cfg.trainer,
        callbacks=[*callbacks, ParameterSummary(), *bar],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO(), *precision, *launch.cluster_plugins()],
        enable_model_summary=bool(cfg.trainer.get("enable_model_summary", False)),
        _convert_="object",
        **extra,
    )


def build_module(cfg: DictConfig, datamodule: Any) -> Any:
    """Network, loss and LightningModule for this data: the data's class table is the one source of the
    class count, names, palette and ignore index (docs/own_data.md); `model.num_classes` may only repeat
    it (null: taken from the data)."""
    n, asked = int(datamodule.num_classes), cfg.model.get("num_classes")
    if asked is not None and int(asked) != n:  # the data's class table is the one source (docs/own_data.md)
        raise ConfigError(
            f"model.num_classes={asked} but the data has {n} classes ({', '.join(datamodule.class_names[:6])}"
            f"{', ...' if n > 6 else ''}): leave model.num_classes out, the data decides it"
        )
    # `model.init_from` is not the network's argument: the fresh network then takes the file's tensors
    network = instantiate({k: v for k, v in cfg.model.items() if k != "init_from"}, num_classes=n)
    if cfg.model.get("init_from"):
        from bisenet_pl.checkpoints.init_from import start_from

        network = start_from(network, str(cfg.model.init_from))
    return instantiate(
        cfg.module,
        model=network,
        loss=instantiate(cfg.loss, ignore_index=int(datamodule.ignore_index)),
        class_names=list(datamodule.class_names),
        palette=datamodule.palette,
        ignore_index=int(datamodule.ignore_index),
        test_scale=list(datamodule.test_scale),
        _convert_="all",  # plain dicts and lists: the schema's nested options become a dict
    )


def overrides() -> list[str]:
    """The command line's overrides, as Hydra parsed them (sys.argv outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else sys.argv[1:]


__all__ = ["build_module", "build_trainer", "overrides", "plain", "read_run_config", "resumed"]
