"""`IterationProgressBar`: one bar over the run's iterations, the unit this recipe counts in.

Lightning's bars count batches of the current epoch ("Epoch 27/-2  3/4"): meaningless for an
iteration-based schedule (`max_epochs=-1`, 160k steps), and after `resume=` the epoch counter and the
batch total disagree with the run. This bar shows `train  step/max_steps` from `trainer.global_step`, so
a resumed run continues the same bar where the killed one stopped. Validation and test bars are
Lightning's own.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class IterationProgressBar(RichProgressBar):
    """Lightning's rich bar, with the training task counting optimizer steps out of `max_steps`."""

    description = "train"

    def _total_steps(self, trainer: L.Trainer) -> int | None:
        return int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else None

    def _ensure_train_task(self, trainer: L.Trainer) -> None:
        if self.progress is None or self.train_progress_bar_id is not None:
            return
        self.train_progress_bar_id = self.progress.add_task(
            self.description, total=self._total_steps(trainer), completed=trainer.global_step
        )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not Lightning's: it resets the task to the epoch's batch count at every epoch.
        if self.is_disabled:
            return
        self._ensure_train_task(trainer)
        self.refresh()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.is_disabled:
            self._ensure_train_task(trainer)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _update(self, progress_bar_id: Any, current: int, visible: bool = True, hard: bool = False) -> None:
        # Lightning passes the batch index within the epoch; the training task shows the global step.
        # (A private hook of RichProgressBar, the one place it sets a task's count; lightning is pinned <3.)
        if progress_bar_id is not None and progress_bar_id == self.train_progress_bar_id:
            current = self.trainer.global_step
        super()._update(progress_bar_id, current, visible, hard)


__all__ = ["IterationProgressBar"]
