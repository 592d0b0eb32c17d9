"""`python -m bisenet_pl.train`: the table rows' configs, a real fit + test, resume after a kill, DDP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _shared import TINY, cli_env, tiny_train_args, wait_for
from hydra import compose, initialize_config_module

from bisenet_pl.training.schedules import warmup_poly_lr

ROWS = ("4x4", "4x8", "fp16", "ohem")


def composed(*overrides: str):
    with initialize_config_module("bisenet_pl.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("row", ROWS)
def test_each_table_row_is_mmseg_recipe(row):
    cfg = composed(f"experiment={row}")
    # 160k iterations, val and checkpoints every 16k, log every 50 (docs/reproduction.md#schedule)
    assert cfg.trainer.max_steps == 160000 and cfg.trainer.max_epochs == -1
    assert cfg.trainer.val_check_interval == 16000 and cfg.trainer.check_val_every_n_epoch is None
    assert cfg.callbacks.iter_checkpoint.every_n_train_steps == 16000
    assert cfg.callbacks.iter_checkpoint._target_ == "bisenet_pl.training.callbacks.IterationCheckpoint"
    assert cfg.callbacks.last_checkpoint._target_ == "bisenet_pl.training.callbacks.LastCheckpoint"
    assert cfg.trainer.log_every_n_steps == 50
    # SGD 0.05 / 0.9 / 5e-4, warm-up 1000 from x0.1, poly 0.9 to 1e-4, the v0.x formula
    m = cfg.module
    assert (m.lr, m.momentum, m.weight_decay) == (0.05, 0.9, 0.0005)
    assert (m.warmup_steps, m.warmup_ratio, m.power, m.min_lr, m.lr_style) == (1000, 0.1, 0.9, 0.0001, "mmcv")
    assert m.max_steps == 160000
    # 4 devices; batch per device
    assert cfg.trainer.devices == 4
    assert cfg.data.batch_size == (8 if row == "4x8" else 4)
    assert list(cfg.data.crop_size) == [1024, 1024] and list(cfg.data.scale) == [2048, 1024]
    assert list(cfg.data.ratio_range) == [0.5, 2.0] and cfg.data.cat_max_ratio == 0.75
    # DDP as mmseg: no unused-parameter search, no buffer broadcast; Lightning never syncs BN itself
    assert cfg.trainer.strategy.find_unused_parameters is False
    assert cfg.trainer.strategy.broadcast_buffers is False
    assert cfg.trainer.sync_batchnorm is False and cfg.sync_bn_heads is True
    assert cfg.model.aux_heads is True and cfg.model.head_dropout == 0.1
    # OHEM only in the ohem row, on all heads with thresh 0.7 / min_kept 10000 (docs/reproduction.md#ohem)
    assert cfg.loss.ohem_thresh == (0.7 if row == "ohem" else None)
    assert cfg.loss.ohem_min_kept == 10000
    # fp16: mixed precision with mmseg's static loss scale 512
    assert str(cfg.trainer.precision) == ("16-mixed" if row == "fp16" else "32-true")
    assert cfg.amp_loss_scale == (512.0 if row == "fp16" else None)


def test_ohem_row_builds_ohem_loss_on_every_head():
    """On logits where OHEM must drop pixels: 11000 hard pixels (GT probability ~0.05) and 5384 easy ones
    (~0.89 > thresh 0.7); with min_kept 10000 < 11000 the threshold is 0.7, so OHEM keeps exactly the hard
    ones. Each head of the ohem row then gets the CE of the hard pixels only (summed / all pixels) and no
    gradient at the easy ones; the 4x4 row (OHEM off) gets both."""
    import torch.nn.functional as F
    from hydra.utils import instantiate

    loss = instantiate(composed("experiment=ohem").loss)
    assert loss.ohem_mode == "thresh"
    g = torch.Generator().manual_seed(0)
    n_pixels, n_hard = 128 * 128, 11000
    label = torch.randint(0, 19, (1, 128, 128), generator=g)
    easy = torch.zeros(1, 128, 128, dtype=torch.bool)
    easy.view(-1)[torch.randperm(n_pixels, generator=g)[: n_pixels - n_hard]] = True

    def head_logits(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        logits = torch.randn(1, 19, 128, 128, generator=gen) * 0.1
        logits.scatter_(1, label.unsqueeze(1), torch.where(easy, 5.0, -3.0).unsqueeze(1))
        return logits.requires_grad_(True)

    names = ("decode", "aux0", "aux1", "aux2", "aux3")
    for row, ohem in (("ohem", True), ("4x4", False)):
        heads = [head_logits(i) for i in range(5)]
        out = instantiate(composed(f"experiment={row}").loss)(heads, label)
        out["total"].backward()
        for name, logits in zip(names, heads, strict=True):
            ce = F.cross_entropy(logits.detach(), label, reduction="none")
            prob = torch.softmax(logits.detach(), 1).gather(1, label.unsqueeze(1))[:, 0]
            assert bool((prob[easy] > 0.7).all() and (prob[~easy] < 0.7).all())
            expected = (ce * ~easy if ohem else ce).sum() / n_pixels
            assert float(out[name].detach()) == pytest.approx(float(expected), rel=1e-5), (row, name)
            grad_at_easy = logits.grad.permute(0, 2, 3, 1)[easy].abs().max()
            assert (grad_at_easy == 0) if ohem else (grad_at_easy > 1e-6), (row, name, float(grad_at_easy))


def test_static_loss_scale_plugin_for_fp16_row():
    from omegaconf import OmegaConf

    from bisenet_pl.training.amp import StaticGradScaler
    from bisenet_pl.training.launch import precision_plugins

    def plugins(*overrides: str) -> list:
        cfg = composed("experiment=fp16", *overrides)
        return precision_plugins(OmegaConf.to_container(cfg.trainer), cfg.get("amp_loss_scale"))

    (plugin,) = plugins("trainer.accelerator=gpu")
    assert isinstance(plugin.scaler, StaticGradScaler) and plugin.scaler.loss_scale == 512.0
    assert plugin.precision == "16-mixed"
    # on CPU Lightning turns 16-mixed into bf16 without any scaler: we say so instead of faking it
    assert plugins("trainer.accelerator=cpu") == []


def test_static_grad_scaler_keeps_512_and_still_skips_inf_steps():
    from bisenet_pl.training.amp import StaticGradScaler

    scaler = StaticGradScaler(512.0, device="cpu")
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=1.0)
    for grad, should_step in (
        (torch.tensor([1.0, 1.0, 1.0]), True),
        (torch.tensor([float("inf"), 0, 0]), False),
    ):
        before = w.detach().clone()
        opt.zero_grad()
        scaler.scale((w * grad).sum()).backward()
        scaler.step(opt)
        scaler.update()
        assert scaler.get_scale() == 512.0  # a dynamic scaler halves on inf and grows after 2000 steps
        assert torch.equal(w.detach(), before) != should_step
    # the dynamic default would have backed off to 256 after the inf step
    dyn = torch.amp.GradScaler("cpu", init_scale=512.0)
    opt.zero_grad()
    dyn.scale((w * torch.tensor([float("inf"), 0, 0])).sum()).backward()
    dyn.step(opt)
    dyn.update()
    assert dyn.get_scale() == 256.0


def test_typo_in_experiment_name_is_one_readable_message(run_cli):
    proc = run_cli("bisenet_pl.train", "experiment=ohme", timeout=120)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert "Could not find 'experiment/ohme'" in err
    for name in ("4x4", "4x8", "fp16", "ohem", "demo"):
        assert name in err
    assert "Traceback" not in err


def test_missing_dataset_is_a_readable_error(run_cli, tmp_path):
    proc = run_cli("bisenet_pl.train", "experiment=demo", f"data.root={tmp_path / 'nowhere'}", timeout=120)
    assert proc.returncode == 2
    assert "nowhere" in proc.stderr and "Traceback" not in proc.stderr


def _metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted((run_dir / "csv").glob("metrics.csv")):
        with path.open() as f:
            rows += [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    return rows


def test_fit_then_test_final_checkpoint(run_cli, tiny_data, tmp_path):
    """A short real run: LR schedule as specified, checkpoints, results.json from the final weights."""
    run_dir = tmp_path / "run"
    args = tiny_train_args(
        tiny_data, tmp_path, "trainer.max_steps=6", "trainer.val_check_interval=3", f"hydra.run.dir={run_dir}"
    )
    proc = run_cli("bisenet_pl.train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 6 and results["world_size"] == 1
    assert 0.0 <= results["results"]["mIoU"] <= 100.0
    assert len(results["results"]["per_class"]) == 19
    # checkpoints: iteration checkpoints at the val interval, last.ckpt, all weights_only-loadable
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and "iter_000003.ckpt" in ckpts and "iter_000006.ckpt" in ckpts
    raw = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert raw["global_step"] == 6 and raw["bisenet_pl"]["meta"]["test_scale"] == [128, 64]
    from bisenet_pl import load_model

    model = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert not model.training and model.config["aux_heads"] is True
    # the LR each iteration used is the v0.x warm-up x poly formula (docs/reproduction.md#schedule)
    rows = _metrics_rows(run_dir)
    lrs = {int(r["step"]): float(r["train/lr"]) for r in rows if "train/lr" in r}
    assert sorted(lrs) == [0, 1, 2, 3, 4, 5]
    for step, lr in lrs.items():
        assert lr == pytest.approx(warmup_poly_lr(step, max_steps=6, warmup_steps=2), rel=1e-6)
    assert all(float(r["train/global_batch"]) == 2.0 for r in rows if "train/global_batch" in r)
    losses = [r for r in rows if "train/loss" in r]
    assert losses and all(f"train/loss_{h}" in losses[0] for h in ("decode", "aux0", "aux1", "aux2", "aux3"))
    assert any("val/mIoU" in r for r in rows) and any("test/mIoU" in r for r in rows)
    # the saved config resumes the same recipe
    assert (run_dir / "run_config.yaml").is_file()
    assert "batch: 2 per device x 1 devices = 2 global" in proc.stderr + proc.stdout


def _popen_train(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bisenet_pl.train", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _step_of(ckpt: Path) -> int:
    """The stored step; a checkpoint that does not load fails the test with its own error."""
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def test_sigkill_then_resume_continues_at_saved_step(tiny_data, tmp_path, run_cli):
    run_dir = tmp_path / "run"
    args = tiny_train_args(
        tiny_data,
        tmp_path,
        "trainer.max_steps=40",
        "trainer.val_check_interval=40",
        "callbacks.last_checkpoint.every_n_train_steps=4",
        "callbacks.iter_checkpoint.every_n_train_steps=40",
        f"hydra.run.dir={run_dir}",
    )
    proc = _popen_train(args, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        wait_for(last.is_file, timeout=240, proc=proc)
        time.sleep(1.5)  # kill at an arbitrary moment, possibly while the next last.ckpt is being written
    finally:
        proc.send_signal(signal.SIGKILL)  # no handler runs: only what is already on disk survives
        proc.wait(timeout=30)
    saved = _step_of(last)
    assert saved >= 4 and saved % 4 == 0  # a whole, loadable checkpoint even after SIGKILL
    assert saved < 40
    assert not (run_dir / "results.json").exists()
    # the documented short form: resume=<run dir> (its saved config, its folder, last.ckpt)
    proc2 = run_cli("bisenet_pl.train", f"resume={run_dir}", timeout=400)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    out = proc2.stdout + proc2.stderr
    assert "Restoring states from the checkpoint" in out or "Restored all states" in out
    assert f"resuming from {last} (step {saved}," in out
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 40  # the saved recipe
    # one run in one metrics.csv: every step once (the killed attempt's rows after `saved` replaced by
    # the retrained ones), and the LR follows the same schedule across the resume
    assert not list((run_dir / "csv").glob("version_*"))
    lr_rows = [r for r in _metrics_rows(run_dir) if "train/lr" in r]
    assert [int(r["step"]) for r in lr_rows] == list(range(40))
    for r in lr_rows:
        expected = warmup_poly_lr(int(r["step"]), max_steps=40, warmup_steps=2)
        assert float(r["train/lr"]) == pytest.approx(expected, rel=1e-6)


def test_sigterm_saves_a_checkpoint_before_exiting(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_train_args(
        tiny_data,
        tmp_path,
        "trainer.max_steps=100000",
        "trainer.val_check_interval=100000",
        "callbacks.last_checkpoint.every_n_train_steps=1000",
        f"hydra.run.dir={run_dir}",
    )
    proc = _popen_train(args, tmp_path)
    log = run_dir / "train.log"
    try:
        wait_for(lambda: log.is_file() and "batch: 2 per device" in log.read_text(), timeout=180, proc=proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    interrupted = run_dir / "checkpoints" / "last-interrupted.ckpt"
    assert interrupted.is_file(), proc.stdout.read()[-3000:]
    assert _step_of(interrupted) >= 1
    assert proc.returncode == 128 + signal.SIGTERM  # interrupted, not finished
    out = proc.stdout.read()
    assert "resume=" in out and str(run_dir) in out


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP on CPU is exercised on Linux")
def test_4x4_row_runs_as_two_process_ddp_on_cpu(tiny_data, tmp_path, run_cli):
    """The 4x4 recipe on `trainer.accelerator=cpu trainer.devices=2` (gloo): one run folder, not one per
    rank; heads keep plain BN (SyncBN would raise on CPU); each val image evaluated exactly once."""
    args = [
        "experiment=4x4",
        f"data.root={tiny_data}",
        f"data.synthetic_root={tiny_data}",
        f"paths.root_dir={tmp_path}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.benchmark=false",
        *TINY,
    ]
    proc = run_cli("bisenet_pl.train", *args, timeout=400, env=cli_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    runs = list((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    results = json.loads((runs[0] / "results.json").read_text())
    assert results["world_size"] == 2 and results["global_step"] == 4
    rows = _metrics_rows(runs[0])
    assert all(float(r["train/global_batch"]) == 4.0 for r in rows if "train/global_batch" in r)
    # 3 val images over 2 ranks, no padding: the confusion matrix counts each label pixel once
    confusion = torch.tensor(results["results"]["confusion_matrix"])
    assert int(confusion.sum()) == _labelled_pixels(tiny_data)


def _labelled_pixels(root: Path) -> int:
    from bisenet_pl.data.cityscapes import CityscapesDataset

    ds = CityscapesDataset(root, "val")
    return sum(int((ds[i]["label"] != 255).sum()) for i in range(len(ds)))


def test_debug_presets_compose():
    fdr = composed("experiment=demo", "debug=fdr")
    assert fdr.trainer.fast_dev_run is True and fdr.data.num_workers == 0 and not fdr.logger
    overfit = composed("debug=overfit")
    assert overfit.trainer.overfit_batches == 2 and overfit.data.photometric is False
    limit = composed("debug=limit")
    assert limit.trainer.max_steps == 20 and limit.callbacks.last_checkpoint.every_n_train_steps == 5


def test_fast_dev_run_preset_trains_validates_and_tests(run_cli, tiny_data, tmp_path):
    proc = run_cli("bisenet_pl.train", *tiny_train_args(tiny_data, tmp_path, "debug=fdr"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert json.loads((run / "results.json").read_text())["global_step"] == 1


def test_checkpoint_holds_only_plain_hyperparameters(tiny_data):
    """weights_only=True must read Lightning checkpoints: no DictConfig/partial/module in hparams."""
    from bisenet_pl.models import Segmentor
    from bisenet_pl.training.losses import MultiHeadLoss
    from bisenet_pl.training.module import SegmentationModule

    module = SegmentationModule(
        Segmentor(), MultiHeadLoss(), inference={"mode": "whole"}, test_scale=[64, 32]
    )
    hp = dict(module.hparams)
    assert "model" not in hp and "loss" not in hp

    def plain(v) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (int, float, str, bool))

    assert plain(hp), hp


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A save that dies halfway (a signal, a full disk) leaves the previous checkpoint whole and no
    stray temporary file: every Lightning checkpoint goes through AtomicCheckpointIO."""
    from bisenet_pl.training.callbacks import AtomicCheckpointIO

    ckpt_io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    ckpt_io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # as if a signal arrived mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt_io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    # the trainer that train.py builds writes through it
    from bisenet_pl.cli.training import build_trainer

    cfg = composed("experiment=demo", "trainer.precision=32-true", f"paths.output_dir={tmp_path}")
    trainer = build_trainer(cfg, [], [])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_cli_env_keeps_the_users_settings_out_of_the_commands(monkeypatch):
    """A user's BISENET_PL_*, SLURM_*, W&B and DDP variables never reach a CLI under test; `extra` does."""
    for key, value in {
        "BISENET_PL_ROOT": "/somewhere/else",
        "SLURM_RESTART_COUNT": "1",
        "WANDB_API_KEY": "x" * 40,
        "WANDB_MODE": "online",
        "LOCAL_RANK": "1",
    }.items():
        monkeypatch.setenv(key, value)
    env = cli_env(SLURM_JOB_ID="7")
    assert not {"BISENET_PL_ROOT", "SLURM_RESTART_COUNT", "WANDB_API_KEY", "LOCAL_RANK"} & set(env)
    assert env["SLURM_JOB_ID"] == "7" and env["WANDB_MODE"] == "offline" and env["OMP_NUM_THREADS"] == "1"
