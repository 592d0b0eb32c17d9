"""A run folder's rules: who may write, and what a start may reuse.

One folder holds one run (docs/resuming.md):
- a start without `ckpt_path`/`resume` is a fresh run, so it refuses a folder that already holds
  checkpoints instead of silently continuing someone else's weights;
- a resume picks the checkpoint with the highest *stored* step (`checkpoints.run_files`, re-exported
  here), never the newest file on disk, which a failed start could have touched;
- one process at a time: a record lock refuses a second trainer on the same folder, and dies with its
  trainer (not with its forked workers);
- temporaries left by a kill during an atomic write are ours and are removed when a run starts.
No Hydra here: `bisenet_pl.train` calls these with plain values.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bisenet_pl.checkpoints.run_files import (
    CHECKPOINTS,
    INTERRUPTED,
    LAST,
    StoredCheckpoint,
    latest_checkpoint,
    run_checkpoints,
    stored_step,
)
from bisenet_pl.errors import ConfigError

log = logging.getLogger(__name__)

LOCK = ".train.lock"
#: Temporaries of `atomic_torch_save` / `atomic_write_text`: `.<target name>.<random>.tmp`.
TEMPORARY_GLOB = ".*.tmp"


def refuse_fresh_start_over(run_dir: Path) -> None:
    """A fresh start must not reuse a folder with checkpoints: say how to resume or where to go instead."""
    found = run_checkpoints(run_dir)
    if not found:
        return
    latest = latest_checkpoint(run_dir)
    at = f" (the latest, {latest.path.name}, is at step {latest.step})" if latest else ""
    raise ConfigError(
        f"{run_dir} already holds {len(found)} checkpoint(s){at}, and this start names no checkpoint. "
        f"To continue that run: `python -m bisenet_pl.train resume={run_dir}`. To start a new run, leave "
        "out hydra.run.dir (a new folder is made) or point it at an empty folder."
    )


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the half-written temporaries a kill during an atomic write left behind (only ours)."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINTS):
        if folder.is_dir():
            for path in folder.glob(TEMPORARY_GLOB):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    if removed:
        log.info("removed %d stale temporary file(s) of an interrupted write in %s", len(removed), run_dir)
    return removed


#: Lock files this process holds (resolved paths): record locks never conflict within one process.
_HELD: set[Path] = set()


class RunLock:
    """An exclusive POSIX record lock (`fcntl.lockf`) on `<run>/.train.lock`: two trainers on one folder
    would write the same checkpoints.

    A record lock belongs to the *process*, not to the open file: the DataLoader workers forked from the
    trainer inherit the descriptor but not the lock, so a kill -9 of the trainer frees the folder at once,
    even while its orphaned workers are still winding down. (A `flock` would be shared with them and
    outlive the trainer by seconds.) The refusal names the holder the kernel reports (`F_GETLK`), so it
    never names a dead process. docs/resuming.md has the protocol.

    The rules of record locks to keep in mind: they never conflict within one process, and closing *any*
    descriptor of the lock file drops the process's lock. So this process keeps its own list of the
    folders it holds (`_HELD`) and refuses a second lock on one of them without opening the file; the
    holder's pid is written into the file for people only.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def _refuse(self, who: str) -> ConfigError:
        return ConfigError(
            f"{self.path.parent} is being trained by {who} right now; two runs on one "
            "folder would overwrite each other's checkpoints. Wait for it to end, or stop it first."
        )

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        if key in _HELD:
            raise self._refuse(f"pid {os.getpid()} (this process)")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _lock_holder(fd)
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise self._refuse(f"pid {holder}" if holder else "another process") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self._fd = fd
        _HELD.add(key)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            _HELD.discard(self.path.resolve())

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_holder(fd: int) -> int | None:
    """The pid holding a write lock on the whole file, as the kernel reports it (F_GETLK); None if free."""
    # struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid.
    request = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, request + b"\0" * 4)
    except OSError:
        return None
    l_type, _, _, _, pid = struct.unpack("hhqqi", answer[: struct.calcsize("hhqqi")])
    return None if l_type == fcntl.F_UNLCK else int(pid)


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def config_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: tuple[str, ...] = ()
) -> list[str]:
    """`key: saved -> current` for every leaf that differs (keys under `ignore` prefixes skipped)."""
    old, new = dict(_flatten(saved)), dict(_flatten(current))
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if any(key == p or key.startswith(p + ".") for p in ignore):
            continue
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            lines.append(f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}")
    return lines


__all__ = [
    "CHECKPOINTS",
    "INTERRUPTED",
    "LAST",
    "RunLock",
    "StoredCheckpoint",
    "config_differences",
    "latest_checkpoint",
    "refuse_fresh_start_over",
    "remove_stale_temporaries",
    "run_checkpoints",
    "stored_step",
]
