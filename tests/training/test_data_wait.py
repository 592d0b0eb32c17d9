"""Where a run's time goes: the loader-worker default (`data.num_workers=auto`), the data wait share of each
step (`train/data_wait_share`, a logged metric and in the progress line) and the one warning when data
loading holds the steps back."""

from __future__ import annotations

import logging
import time

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import Dataset

from bisenet_pl.data.cityscapes_datamodule import CityscapesDataModule
from bisenet_pl.data.datamodule import (
    MAX_AUTO_WORKERS,
    TimedResumableLoader,
    auto_workers,
    available_cores,
)
from bisenet_pl.data.samplers import ResumableSampler
from bisenet_pl.training.callbacks import SpeedMonitor


def test_auto_workers_never_exceed_the_cores_per_device():
    assert auto_workers(1, cores=2) == 2  # this project's 2-core machine: 2, not 4 (PyTorch warned at 4)
    assert auto_workers(2, cores=2) == 1
    assert auto_workers(4, cores=2) == 1  # never 0: the main process would then decode
    assert auto_workers(8, cores=64) == 8
    assert auto_workers(1, cores=96) == MAX_AUTO_WORKERS


def test_datamodule_default_is_auto_and_logged(tmp_path, caplog):
    dm = CityscapesDataModule(tmp_path, generate_if_missing=False)
    assert dm.num_workers is None  # "auto"
    with caplog.at_level(logging.INFO, logger="bisenet_pl.data.datamodule"):
        assert dm.workers() == auto_workers(1) == min(available_cores(), MAX_AUTO_WORKERS)
        dm.workers()
    said = [r.getMessage() for r in caplog.records if "num_workers=auto" in r.getMessage()]
    assert len(said) == 1 and f"{available_cores()} CPU cores" in said[0], said
    assert CityscapesDataModule(tmp_path, num_workers="auto").num_workers is None
    assert CityscapesDataModule(tmp_path, num_workers=3).workers() == 3
    with pytest.raises(Exception, match="num_workers"):
        CityscapesDataModule(tmp_path, num_workers="many")


class _Items(Dataset):
    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        time.sleep(self.delay)
        return {"image": torch.full((3, 4, 4), float(i)), "label": torch.zeros(4, 4, dtype=torch.long)}


class _Tiny(pl.LightningModule):
    def __init__(self, step_delay: float) -> None:
        super().__init__()
        self.layer = torch.nn.Conv2d(3, 1, 1)
        self.step_delay = step_delay

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_delay)
        return self.layer(batch["image"]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path, item_delay: float, step_delay: float, steps: int = 14):
    dataset = _Items(64, item_delay)
    loader = TimedResumableLoader(dataset, batch_size=2, sampler=ResumableSampler(dataset), drop_last=True)
    monitor = SpeedMonitor(log_every_n_steps=100, warn_steps=5)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(_Tiny(step_delay), train_dataloaders=loader)
    return trainer, monitor


def test_slow_data_is_measured_and_warned_once(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bisenet_pl.training.callbacks"):
        # ~200 ms of data per batch against a step of a few ms: data must be most of each step even on a
        # loaded machine (where Lightning's own per-step work slows down, the sleep does not)
        trainer, monitor = _fit(tmp_path, item_delay=0.1, step_delay=0.0)
    share = float(trainer.callback_metrics["train/data_wait_share"])
    assert share > 0.5, share
    warnings = [r.getMessage() for r in caplog.records if "waited for data" in r.getMessage()]
    assert len(warnings) == 1, warnings  # one warning, not one per step
    assert "data.num_workers" in warnings[0] and "bisenet_pl.data.cache" in warnings[0]
    assert monitor.warned


def test_fast_data_gives_a_small_share_and_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bisenet_pl.training.callbacks"):
        trainer, monitor = _fit(tmp_path, item_delay=0.0, step_delay=0.05)
    share = float(trainer.callback_metrics["train/data_wait_share"])
    assert 0.0 <= share < 0.2, share
    assert not monitor.warned
    assert not [r for r in caplog.records if "waited for data" in r.getMessage()]
