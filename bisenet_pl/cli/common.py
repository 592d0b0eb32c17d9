"""What every entry point shares: readable errors, environment hygiene, and building objects from config."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
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
    """No network and no prompts at run time (albumentations asks PyPI for updates on import)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    # Without an account W&B must never prompt; the wandb logger decides offline/online itself.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_START_METHOD", "thread")


def print_error(message: str) -> None:
    try:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    except Exception:  # pragma: no cover - rich is a dependency; plain text is the fallback
        print(f"error: {message}", file=sys.stderr)


def readable_errors(func: F) -> F:
    """Turn a `BisenetError` (bad input the user can fix) into one message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BisenetError as err:
            print_error(str(err))
            raise SystemExit(2) from None

    return cast(F, wrapper)


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


def hydra_output_dir() -> Path | None:
    """The run (or sweep job) folder Hydra made for this process, if running under Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return None
