"""A run resumed mid-epoch sees the same images in the same order as a run never interrupted, shows one
progress bar counting iterations of the whole run, and Lightning has nothing to warn about."""

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import Dataset, DistributedSampler

from bisenet_pl.data.samplers import ResumableLoader, ResumableSampler
from bisenet_pl.training.progress import IterationProgressBar


class Numbers(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i)])


class Recorder(L.LightningModule):
    """Records the sample ids of every training step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[list[int]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append([int(v) for v in batch[:, 0]])
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        sampler = ResumableSampler(Numbers(), 1, 0, seed=7)
        trainer = self.trainer
        return ResumableLoader(
            Numbers(), batch_size=3, sampler=sampler, drop_last=True, batches_done=lambda: trainer.global_step
        )


class BarLog(IterationProgressBar):
    """The bar's training task (completed, total) after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[tuple[float, float | None]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        task = self.progress.tasks[self.train_progress_bar_id]
        self.states.append((task.completed, task.total))


def _fit(tmp_path, max_steps: int, ckpt_path=None, bar: BarLog | None = None) -> Recorder:
    model = Recorder()
    checkpoints = ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    trainer = L.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        callbacks=[checkpoints, *([bar] if bar else [])],
        enable_progress_bar=bar is not None,
        logger=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, ckpt_path=ckpt_path)
    model.warnings = [str(w.message) for w in caught]
    return model


def test_resume_mid_epoch_continues_the_same_data_order_and_the_same_bar(tmp_path):
    # 10 samples, batches of 3, drop_last: 3 steps per epoch; step 4 is mid-way through epoch 1.
    whole = _fit(tmp_path / "whole", max_steps=8)
    first = _fit(tmp_path / "killed", max_steps=8)
    bar = BarLog()
    resumed = _fit(tmp_path / "resumed", max_steps=8, ckpt_path=tmp_path / "killed/ckpt/step=4.ckpt", bar=bar)

    assert first.seen[:4] + resumed.seen == whole.seen
    assert len(resumed.seen) == 4
    assert sorted(sum(whole.seen[3:6], [])) != sorted(sum(whole.seen[0:3], []))  # a new shuffle per epoch
    assert not [w for w in resumed.warnings if "unreliable results" in w]
    assert bar.states == [(5, 8), (6, 8), (7, 8), (8, 8)]  # the run's iterations, not the epoch's batches


@pytest.mark.parametrize("world", [1, 3])
def test_the_epoch_order_is_the_distributed_samplers_and_a_resume_skips_only_once(world):
    data = list(range(23))
    ours = [ResumableSampler(data, world, r, seed=5) for r in range(world)]
    ref = [DistributedSampler(data, world, r, shuffle=True, seed=5, drop_last=True) for r in range(world)]
    for epoch in (0, 1):
        for a, b in zip(ours, ref, strict=True):
            a.set_epoch(epoch)
            b.set_epoch(epoch)
            assert list(a) == list(b)
    sampler = ours[-1]
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.resume_at(1, 4)
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # the next pass of that epoch is whole again
