"""Training data order that survives `resume=`: the same shuffle for the same epoch, and after a resume
the rest of the interrupted epoch instead of a new one.

Why: a run killed mid-epoch and resumed would otherwise start that epoch over with a fresh shuffle, so
some images are seen twice and others not at all before the epoch ends (Lightning warns "unreliable
results"). mmseg's iteration loop skips the batches already trained on when it resumes; we do the same
without decoding them: the order of epoch `e` is a permutation seeded by `seed + e` (that is what
`DistributedSampler` does on every rank count, one process included), so the sampler can start that
permutation part-way.

What is restored exactly is *which* images each step sees, in which order. The random augmentation
draws after a resume are not the killed run's (they come from fresh worker seeds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (shuffle, drop_last, `seed + epoch`) that can start epoch `e` at sample `k`.

    With `num_replicas=1` it is a seeded per-epoch shuffle of the whole dataset. `resume_at(e, k)` makes
    the next pass of epoch `e` skip this rank's first `k` samples; any other epoch is whole.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, samples_done: int) -> None:
        self._resume = (int(epoch), int(samples_done))

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._resume is not None and self._resume[0] == self.epoch:
            indices = indices[self._resume[1] :]
            self._resume = None  # only the interrupted pass is partial
        return iter(indices)


class ResumableLoader(DataLoader):
    """The training DataLoader: Lightning stores its `state_dict` in every checkpoint and hands it back
    on resume, which makes the sampler continue the interrupted epoch.

    `batches_done` returns how many batches the run has trained on (global step x gradient
    accumulation); it is read when a checkpoint is written.
    """

    sampler: ResumableSampler

    def __init__(
        self, dataset: Dataset, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(dataset, *args, **kwargs)
        self._batches_done = batches_done

    def _identity(self) -> dict[str, int]:
        s = self.sampler
        return {
            "seed": int(s.seed),
            "num_samples": int(s.num_samples),
            "num_replicas": int(s.num_replicas),
            "batch_size": int(self.batch_size or 1),
        }

    def state_dict(self) -> dict[str, int]:
        done = int(self._batches_done()) if self._batches_done is not None else 0
        per_epoch = max(len(self), 1)
        return {**self._identity(), "epoch": done // per_epoch, "batches_in_epoch": done % per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = {k: state.get(k) for k in self._identity()}
        if saved != self._identity():
            log.warning(
                "the saved run's data order (%s) differs from this run's (%s): the interrupted epoch "
                "restarts with a new shuffle",
                saved,
                self._identity(),
            )
            return
        batch_size = int(self.batch_size or 1)
        self.sampler.resume_at(int(state["epoch"]), int(state["batches_in_epoch"]) * batch_size)


__all__ = ["ResumableLoader", "ResumableSampler"]
