"""Ctrl-C takes the SIGTERM path: stop at the next batch boundary, save the interrupt checkpoint, print
the resume command, exit with 128 + the signal's number (130), as a cluster's SIGTERM does (143).

Lightning's own Ctrl-C handling tears the run down with status 1 and no checkpoint. The first SIGINT is
therefore turned into a SIGTERM to this process, which Lightning's signal connector handles (and, under
DDP, broadcasts to every rank); a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class GracefulStop:
    """Install with `with stop.installed(): trainer.fit(...)`; `received` is the signal that stopped it."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._pid = os.getpid()

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked child that kept the handler: not ours to stop
            raise KeyboardInterrupt
        if self.received is not None or signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            raise KeyboardInterrupt  # second Ctrl-C, or before Lightning listens for SIGTERM: abort
        self.received = signal.SIGINT
        log.warning("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort)")
        os.kill(self._pid, signal.SIGTERM)

    @contextlib.contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def report(self, trainer: Any, run_dir: Path) -> int:
        """After Lightning stopped `fit` on the signal: say where it stopped and how to resume (rank zero),
        and return the exit status, 128 + the signal's number."""
        signum = self.received or signal.SIGTERM
        if trainer.is_global_zero:
            saved = (run_dir / "checkpoints" / "last-interrupted.ckpt").is_file()
            log.warning(
                "%s: stopped at step %d%s. Resume with:\n  python -m bisenet_pl.train resume=%s",
                signal.Signals(signum).name,
                trainer.global_step,
                f", checkpoint saved in {run_dir / 'checkpoints'}" if saved else "",
                run_dir,
            )
        return 128 + int(signum)


def scalar_metrics(trainer: Any) -> dict[str, float]:
    """The trainer's one-number callback metrics as floats (what a run returns and a sweep optimises)."""

    def scalar(value: Any) -> bool:
        try:
            return bool(value.numel() == 1)
        except AttributeError:
            return isinstance(value, (int, float))

    return {k: float(v) for k, v in trainer.callback_metrics.items() if scalar(v)}


__all__ = ["GracefulStop", "scalar_metrics"]
