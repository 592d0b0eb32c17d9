"""What every entry point shares: readable errors, environment hygiene, and building objects from config."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import bisenet_pl.cli.resolvers  # noqa: F401  (registers the resolvers the configs use)
from bisenet_pl.errors import BisenetError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

#: The Hydra configs: the repository's top-level `conf/`, installed as the package `bisenet_pl.conf`
#: (pyproject's package-dir mapping), so a wheel install and an editable one find the same files.
CONFIG_PATH = "pkg://bisenet_pl.conf"


def quiet_environment() -> None:
    """No network and no prompts at run time (albumentations asks PyPI for updates on import), and no
    library warnings that say nothing about this run (docs/libraries.md#console-output)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    # Without an account W&B must never prompt; the wandb logger decides offline/online itself.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_START_METHOD", "thread")
    # Lightning warns on every run on a machine that merely has Slurm installed. Inside a Slurm
    # allocation the hint (start the ranks with srun) can matter, so there it stays.
    if "SLURM_JOB_ID" not in os.environ:
        warnings.filterwarnings(
            "ignore",
            message=r"The `srun` command is available on your system but is not used",
            category=UserWarning,
        )
    # `train` refuses a fresh start into a folder that holds checkpoints (training/run_folder.py), so a
    # non-empty checkpoint folder only ever means `resume=`, where Lightning's warning is noise.
    warnings.filterwarnings(
        "ignore", message=r"Checkpoint directory .* exists and is not empty", category=UserWarning
    )
    # Lightning logs every `log_every_n_steps` optimizer steps counted across epochs, so an epoch shorter
    # than the interval (the demo's 5 batches, any small own dataset) still logs: the warning is wrong here.
    warnings.filterwarnings(
        "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval"
    )
    # Lightning 2.6's own pytree helper uses torch's deprecated LeafSpec; Lightning's code, not ours.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


class DropMessages(logging.Filter):
    """A logging filter that drops the records whose message starts with one of `prefixes`.

    conf/hydra/default.yaml attaches it to the logger that prints Lightning's advertising tips.
    """

    def __init__(self, prefixes: Sequence[str] = ()) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def print_error(message: str) -> None:
    try:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    except Exception:  # pragma: no cover - rich is a dependency; plain text is the fallback
        print(f"error: {message}", file=sys.stderr)


def readable_errors(func: F) -> F:
    """Turn an error the user caused into one message and exit status 2 (`HYDRA_FULL_ERROR=1` shows the
    traceback): a `BisenetError`, a mandatory key left out (`evaluate` without `ckpt=`), or a config value
    of the wrong type that an object refused when it was built (`data.batch_size=abc`)."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BisenetError as err:
            print_error(_without_worker_traceback(str(err)))
        except MissingMandatoryValue as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            key = getattr(err, "full_key", None) or str(err).rsplit(":", 1)[-1].strip()
            print_error(f"`{key}` is required: add {key}=<value> to the command line (--help lists the keys)")
        except InstantiationException as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print_error(_instantiation_message(err))
        raise SystemExit(2)

    return cast(F, wrapper)


def _without_worker_traceback(message: str) -> str:
    """A `DatasetError` raised in a DataLoader worker reaches the main process with the worker's whole
    traceback in its message ("Caught DatasetError in DataLoader worker process 0. Original Traceback
    ..."); the user needs only its last line, the error itself."""
    if "Original Traceback" not in message:
        return message
    for line in reversed(message.strip().splitlines()):
        if line.startswith("bisenet_pl.errors.") and ": " in line:
            return line.split(": ", 1)[1]
    return message


def _instantiation_message(err: Exception) -> str:
    """`data: data.batch_size must be an integer, got 'abc'` from Hydra's wrapped error."""
    text = str(err)
    key = text.rsplit("full_key:", 1)[-1].strip().splitlines()[0] if "full_key:" in text else "the config"
    cause = err.__cause__ or err.__context__
    if isinstance(cause, BisenetError):
        return str(cause)
    reason = f"{type(cause).__name__}: {cause}" if cause is not None else text.splitlines()[0]
    return f"`{key}` could not be built from its config: {reason}. Check the values given for {key}.*"


def instantiate_dict(node: Any, kind: str) -> list[Any]:
    """Instantiate every `_target_` entry of a dict-of-configs group (callbacks, loggers).

    A group is a dict so that `logger=many` or `+callbacks.foo=...` compose; entries set to null are
    skipped, which is how an experiment switches one off.
    """
    from hydra.utils import instantiate
    from omegaconf import DictConfig

    objects: list[Any] = []
    if not node:
        return objects
    if not isinstance(node, DictConfig):
        raise BisenetError(f"the `{kind}` config must be a mapping of name -> {{_target_: ...}}")
    for name, conf in node.items():
        if conf is None:
            continue
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise BisenetError(
                f"`{kind}.{name!s}` has no `_target_`: every {kind} entry instantiates an object"
            )
        log.debug("instantiating %s.%s -> %s", kind, name, conf._target_)
        objects.append(instantiate(conf))
    return objects


def keyword_options(node: Any) -> dict[str, Any]:
    """A mapping config node (e.g. `inference`) as keyword arguments, entries set to null left out."""
    from omegaconf import OmegaConf

    options = cast("dict[str, Any]", OmegaConf.to_container(node))  # a DictConfig's keys: str
    return {k: v for k, v in options.items() if v is not None}


def build_predictor(cfg: Any) -> Any:
    """The `Predictor` of a predict-like config (`ckpt`, `device`, `mode`, `fast`, `test_scale`,
    `backend`, `inference`): what `predict` and `serve` run."""
    from bisenet_pl.inference.predictor import Predictor

    test_scale = cfg.test_scale if cfg.test_scale in ("checkpoint", None) else tuple(cfg.test_scale)
    return Predictor(
        cfg.ckpt,
        device=cfg.device,
        mode=cfg.mode,
        fast=cfg.fast,
        test_scale=test_scale,
        backend=str(cfg.backend),
        **keyword_options(cfg.inference),
    )


def hydra_output_dir() -> Path | None:
    """The run (or sweep job) folder Hydra made for this process, if running under Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return None


def require_same_classes(source: Any, classes: list[str], datamodule: Any, fix: str) -> None:
    """A model of one class table on data of another is one error naming both (evaluate, export's INT8
    calibration): `fix` says what to do with the model ("evaluate it", "calibrate and gate it")."""
    if int(datamodule.num_classes) == len(classes):
        return
    from bisenet_pl.errors import ConfigError

    raise ConfigError(
        f"{source} predicts {len(classes)} classes ({', '.join(classes[:5])}, ...) but the data has "
        f"{datamodule.num_classes} ({', '.join(datamodule.class_names[:5])}, ...): {fix} on its own "
        "dataset (data=... data.root=...)"
    )
