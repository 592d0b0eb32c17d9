"""Experiment loggers built from config: W&B that never prompts, and resumes the run it started.

W&B's own default, with no account, is an interactive login prompt, which hangs a SLURM job or CI. The
factory below decides the mode once: an explicit `mode`/`WANDB_MODE` wins; otherwise online when an API
key is configured (env or netrc), offline when not (sync later with `wandb sync <run>/wandb/offline-*`).
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

#: The W&B run id is kept in the run folder so a resumed training continues the same W&B run.
WANDB_ID_FILE = "wandb_run_id.txt"


def new_run_id() -> str:
    """An 8-character lowercase base-36 id, the shape W&B uses for its own run ids."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def wandb_has_credentials() -> bool:
    """True when wandb could log in without asking: `WANDB_API_KEY` or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str | None = "auto") -> str:
    """`online`, `offline` or `disabled`; `auto` (the default) means online only with credentials."""
    env = os.environ.get("WANDB_MODE")
    if env is not None and not env.strip():
        os.environ.pop("WANDB_MODE")  # wandb itself refuses an empty WANDB_MODE
        env = None
    if mode in (None, "auto") and env:
        mode = {"dryrun": "offline", "run": "online"}.get(env, env)
    if mode in (None, "auto"):
        mode = "online" if wandb_has_credentials() else "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"wandb mode must be auto, online, offline or disabled, got {mode!r}")
    return mode


def build_wandb_logger(
    save_dir: str | Path,
    project: str = "bisenet_pl",
    entity: str | None = None,
    group: str | None = None,
    tags: Sequence[str] | None = None,
    name: str | None = None,
    job_type: str = "train",
    mode: str | None = "auto",
    resume_id: str | None = None,
    **kwargs: Any,
):
    """A Lightning `WandbLogger` that is offline without an account and resumes its run in `save_dir`.

    The run id is read from (or written to) `save_dir/wandb_run_id.txt`, so `resume=<run dir>` logs into
    the same W&B run. `mode` goes to `wandb.init` directly rather than through `offline=True`, which would
    set `WANDB_MODE` for the whole process (docs/libraries.md).
    """
    from lightning.pytorch.loggers import WandbLogger

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    id_file = save_dir / WANDB_ID_FILE
    run_id = resume_id or (id_file.read_text().strip() if id_file.is_file() else None) or new_run_id()
    try:
        id_file.write_text(run_id + "\n")
    except OSError:  # read-only run folder: resuming the W&B run is then up to the user
        log.warning("could not record the W&B run id in %s", id_file)
    resolved = resolve_wandb_mode(mode)
    if resolved == "offline":
        log.info("W&B: offline run %s (no account configured); upload later with `wandb sync`", run_id)
    return WandbLogger(
        save_dir=str(save_dir),
        project=project,
        entity=entity,
        group=group,
        tags=list(tags or []),
        name=name,
        id=run_id,
        resume="allow",
        job_type=job_type,
        mode=resolved,
        **kwargs,
    )


def log_error_to_file(logger: logging.Logger, message: str) -> None:
    """An ERROR record for the run's log file only (the console shows the error once, from the command):
    a sweep report reads a failed job's error there."""
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def finish_wandb() -> None:
    """End the current W&B run, so the next job of a multirun never logs into it (docs/libraries.md)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return
    if wandb.run is not None:
        wandb.finish()
