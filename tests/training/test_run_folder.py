"""One run, one folder: which checkpoint is the last one, who may write, what a start may reuse.

The rules of `bisenet_pl.training.run_folder` and the checkpoint callbacks, exercised on small files and
an in-process `Trainer.fit` of a two-parameter model, so every case takes a second.
"""

from __future__ import annotations

import errno
import os
import time

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from bisenet_pl.errors import CheckpointError, ConfigError, TrainingDiverged
from bisenet_pl.training.callbacks import AtomicCheckpointIO, InterruptCheckpoint, LastCheckpoint
from bisenet_pl.training.run_folder import (
    RunLock,
    config_differences,
    latest_checkpoint,
    refuse_fresh_start_over,
    remove_stale_temporaries,
)


def _fake(path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.ones(1)}}, path)


def test_resume_picks_the_highest_stored_step_not_the_newest_file(tmp_path):
    ckpts = tmp_path / "checkpoints"
    _fake(ckpts / "last.ckpt", 8)
    time.sleep(0.01)
    _fake(ckpts / "last-interrupted.ckpt", 0)  # what a failed start used to write: newest, but step 0
    (ckpts / "corrupt.ckpt").write_bytes(b"PK\x03\x04 truncated")
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.path.name == "last.ckpt" and latest.step == 8
    _fake(ckpts / "last-interrupted.ckpt", 11)
    assert latest_checkpoint(tmp_path).path.name == "last-interrupted.ckpt"
    _fake(ckpts / "last.ckpt", 11)  # a tie: last.ckpt
    assert latest_checkpoint(tmp_path).path.name == "last.ckpt"
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_a_fresh_start_over_checkpoints_is_refused_with_the_way_out(tmp_path):
    refuse_fresh_start_over(tmp_path)  # empty: fine
    _fake(tmp_path / "checkpoints" / "last.ckpt", 40)
    with pytest.raises(ConfigError) as err:
        refuse_fresh_start_over(tmp_path)
    message = str(err.value)
    assert "step 40" in message and f"resume={tmp_path}" in message and "hydra.run.dir" in message


def test_stale_temporaries_of_our_writes_are_removed_and_nothing_else(tmp_path):
    ckpts = tmp_path / "checkpoints"
    _fake(ckpts / "last.ckpt", 3)
    stale = [ckpts / ".last.ckpt.x1y2.tmp", tmp_path / ".run_config.yaml.abcd.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = [ckpts / "notes.tmp", tmp_path / "run_config.yaml"]
    for path in keep:
        path.write_text("mine")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(not p.exists() for p in stale) and all(p.exists() for p in keep)
    assert (ckpts / "last.ckpt").exists()


def test_a_second_trainer_on_one_folder_is_refused_until_the_first_ends(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ConfigError) as err:
            RunLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in str(err.value) and str(tmp_path) in str(err.value)
    RunLock(tmp_path).acquire().release()  # released: free again


def test_config_differences_name_each_changed_key():
    saved = {"module": {"lr": 0.05, "momentum": 0.9}, "seed": 0, "ckpt_path": None}
    now = {"module": {"lr": 0.01, "momentum": 0.9}, "seed": 3, "ckpt_path": "last", "extra": 1}
    assert config_differences(saved, now, ignore=("ckpt_path",)) == [
        "extra: '<absent>' -> 1",
        "module.lr: 0.05 -> 0.01",
        "seed: 0 -> 3",
    ]


class _Tiny(pl.LightningModule):
    def __init__(self, fail_at: int | None = None, nan_at: int | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.fail_at, self.nan_at = fail_at, nan_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise RuntimeError("a fault")
        if self.global_step == self.nan_at:
            with torch.no_grad():
                self.layer.weight.fill_(float("nan"))
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path, module, max_steps, callbacks, ckpt_path=None):
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=tmp_path,
    )
    data = DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=2)
    trainer.fit(module, data, ckpt_path=ckpt_path, weights_only=True)
    return trainer


def _step(path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def test_last_ckpt_holds_the_final_step_and_stays_one_file_across_resumes(tmp_path):
    ckpts = tmp_path / "checkpoints"
    _fit(tmp_path, _Tiny(), 6, [LastCheckpoint(ckpts, every_n_train_steps=4)])
    assert _step(ckpts / "last.ckpt") == 6  # not 4: the end of training always writes last.ckpt
    _fit(tmp_path, _Tiny(), 10, [LastCheckpoint(ckpts, every_n_train_steps=4)], ckpt_path=ckpts / "last.ckpt")
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]  # no last-v1.ckpt
    assert _step(ckpts / "last.ckpt") == 10


def test_the_interrupt_checkpoint_needs_a_trained_step(tmp_path):
    ckpts = tmp_path / "checkpoints"
    with pytest.raises(RuntimeError, match="a fault"):
        _fit(tmp_path, _Tiny(fail_at=0), 10, [InterruptCheckpoint(ckpts)])
    assert not (ckpts / "last-interrupted.ckpt").exists()  # a failed start writes nothing
    with pytest.raises(RuntimeError, match="a fault"):
        _fit(tmp_path, _Tiny(fail_at=3), 10, [InterruptCheckpoint(ckpts)])
    assert _step(ckpts / "last-interrupted.ckpt") == 3


def test_nan_weights_never_overwrite_a_good_checkpoint(tmp_path, caplog):
    ckpts = tmp_path / "checkpoints"
    with pytest.raises(TrainingDiverged, match="at step 8 .* NaN or infinite"):
        _fit(
            tmp_path,
            _Tiny(nan_at=5),
            12,
            [LastCheckpoint(ckpts, every_n_train_steps=4), InterruptCheckpoint(ckpts)],
        )
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4 and all(bool(t.isfinite().all()) for t in last["state_dict"].values())
    assert not (ckpts / "last-interrupted.ckpt").exists()


def test_a_full_disk_is_one_message_and_the_previous_file_survives(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.ckpt"
    _fake(target, 4)
    before = target.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as err:  # torch's zip writer wraps the OSError in a RuntimeError
            raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed") from err

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as err:
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1024, 1024)}}, target)
    message = str(err.value)
    assert "disk is full" in message and str(target.parent) in message and "4 MiB needed" in message
    assert target.read_bytes() == before and not list(target.parent.glob(".*.tmp"))
