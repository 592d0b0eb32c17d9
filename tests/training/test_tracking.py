"""W&B dashboards without an account, resumed runs, Hydra multiruns, Optuna and the sweep summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from _shared import cli_env, tiny_train_args
from _wandb_records import config, history
from hydra import compose, initialize_config_module
from PIL import Image


def no_account_env(home: Path) -> dict[str, str]:
    """A user without W&B credentials: no API key, no netrc, no forced mode."""
    env = cli_env(HOME=str(home))
    for key in ("WANDB_MODE", "WANDB_API_KEY", "NETRC"):
        env.pop(key, None)
    return env


def test_wandb_mode_is_offline_without_an_account_and_online_with_one(tmp_path, monkeypatch):
    from bisenet_pl.training.loggers import resolve_wandb_mode

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    assert resolve_wandb_mode("auto") == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert resolve_wandb_mode("auto") == "online"
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"  # an explicit choice wins


def _offline_run_file(run_dir: Path, run_id: str) -> Path:
    (path,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    return path


def test_wandb_offline_run_has_metrics_overlays_per_class_table_and_resumes(tiny_data, tmp_path, run_cli):
    run_dir = tmp_path / "run"
    args = tiny_train_args(
        tiny_data,
        tmp_path,
        "logger=many",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        f"hydra.run.dir={run_dir}",
    )
    proc = run_cli("bisenet_pl.train", *args, env=no_account_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "offline run" in proc.stderr + proc.stdout
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    rows = history(_offline_run_file(run_dir, run_id))
    keys = {k for r in rows for k in r}
    expected = ("train/loss", "train/loss_decode", "train/loss_aux3", "train/lr", "train/global_batch",
                "train/images_per_s", "val/mIoU", "val/aAcc", "test/mIoU", "trainer/global_step")  # fmt: skip
    for key in expected:
        assert key in keys, key
    assert any(k.startswith("val/IoU/") for k in keys)  # per-class scalars
    assert any(k.startswith("val/per_class") for k in keys)  # the wandb.Table
    assert any(k.startswith("val/predictions") for k in keys)  # overlays
    # the overlays: every validation, the 3 val images with ground-truth and prediction masks
    media = next((run_dir / "wandb").glob(f"offline-run-*-{run_id}")) / "files"
    overlays = [r for r in rows if "val/predictions.count" in r]
    assert len(overlays) == 2 and all(r["val/predictions.count"] == 3 for r in overlays)
    from bisenet_pl.data.cityscapes import CityscapesDataset

    labels = {item["name"]: item["label"].numpy() for item in CityscapesDataset(tiny_data, "val")}
    row = overlays[-1]
    assert row["val/predictions.captions"] == sorted(labels)
    for name, masks in zip(row["val/predictions.captions"], row["val/predictions.all_masks"], strict=True):
        gt = np.asarray(Image.open(media / masks["ground_truth"]["path"]))
        assert np.array_equal(gt, labels[name])  # the ground truth shown is the label, 255 kept as "ignore"
        pred = np.asarray(Image.open(media / masks["predictions"]["path"]))
        assert pred.shape == gt.shape and set(np.unique(pred).tolist()) <= set(range(19))
    table = json.loads(next((media / "media" / "table" / "val").glob("per_class_*.json")).read_text())
    assert table["columns"] == ["class", "IoU", "Acc"] and len(table["data"]) == 19
    # the resolved config went to W&B as a plain dict
    cfg = config(_offline_run_file(run_dir, run_id))
    assert cfg["data"]["root"] == str(tiny_data) and cfg["experiment_name"] == "demo"
    # a resumed training logs into the same W&B run
    proc = run_cli("bisenet_pl.train", f"resume={run_dir}", env=no_account_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    assert (run_dir / "wandb_run_id.txt").read_text().strip() == run_id


def test_multirun_gives_each_job_its_folder_its_wandb_run_and_a_summary(tiny_data, tmp_path, run_cli):
    """`-m 'experiment=glob(4x*)'`: two table rows as two jobs, one after another, each job in its own
    folder with its own W&B run (wandb.finish between jobs), and a summary table of the sweep."""
    args = tiny_train_args(
        tiny_data,
        tmp_path,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.devices=1",
        "trainer.accelerator=cpu",
        "trainer.strategy=auto",
        "logger=wandb",
    )
    args = ["-m", "experiment=glob(4x*)", *[a for a in args if not a.startswith("experiment=")]]
    proc = run_cli("bisenet_pl.train", *args, env=no_account_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    ids = {(job / "wandb_run_id.txt").read_text().strip() for job in jobs}
    assert len(ids) == 2  # never two jobs in one W&B run
    groups = [config(_offline_run_file(job, (job / "wandb_run_id.txt").read_text().strip())) for job in jobs]
    assert sorted(g["experiment_name"] for g in groups) == ["4x4", "4x8"]
    with (sweep / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert [r["overrides"] for r in summary] == ["experiment=4x4", "experiment=4x8"]
    for row, job in zip(summary, jobs, strict=True):
        result = json.loads((job / "results.json").read_text())
        assert float(row["mIoU"]) == pytest.approx(result["results"]["mIoU"])
        assert row["status"] == "done"
    assert "experiment=4x8" in (sweep / "summary.md").read_text()
    page = (sweep / "report.html").read_text()  # written at the sweep's end (report=true, the default)
    assert 'href="0/report.html"' in page and 'href="1/report.html"' in page
    assert (sweep / "report" / "sweep_miou.png").stat().st_size > 1000  # final mIoU per configuration


def test_optuna_sweep_maximises_val_miou(tiny_data, tmp_path, run_cli):
    args = tiny_train_args(tiny_data, tmp_path, "trainer.max_steps=2", "trainer.val_check_interval=2")
    proc = run_cli(
        "bisenet_pl.train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *args, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "module.lr",
        "module.weight_decay",
        "search.ratio_min",
        "search.ratio_max",
    }
    values = [json.loads((job / "results.json").read_text()) for job in sorted(sweep.glob("[0-9]*"))]
    assert len(values) == 2
    # the value Optuna maximised is each job's final val mIoU
    from omegaconf import OmegaConf

    for job in sorted(sweep.glob("[0-9]*")):
        c = OmegaConf.load(job / ".hydra" / "config.yaml")
        assert 0.005 <= c.module.lr <= 0.2 and 1e-5 <= c.module.weight_decay <= 1e-3
        assert list(c.data.ratio_range) == [c.search.ratio_min, c.search.ratio_max]
        assert 0.25 <= c.search.ratio_min <= 1.0 <= c.search.ratio_max <= 2.5
    assert best["best_value"] == pytest.approx(max(v["results"]["mIoU"] for v in values), abs=1e-4)


def test_multirun_with_several_devices_spawns_instead_of_relaunching(monkeypatch):
    from omegaconf import OmegaConf

    from bisenet_pl.errors import ConfigError
    from bisenet_pl.training.launch import multirun_strategy

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with initialize_config_module("bisenet_pl.conf", version_base="1.3"):
        trainer = OmegaConf.to_container(compose("train", overrides=["experiment=4x4"]).trainer)
    assert multirun_strategy(trainer, multirun=True)["start_method"] == "spawn"  # the 4x4 row's DDPStrategy
    assert multirun_strategy({**trainer, "strategy": "ddp"}, multirun=True) == "ddp_spawn"
    assert multirun_strategy({**trainer, "strategy": "ddp"}, multirun=False) is None  # a single run: as asked
    assert multirun_strategy({**trainer, "devices": 1, "strategy": "ddp"}, multirun=True) is None
    with pytest.raises(ConfigError, match="ddp_spawn"):
        multirun_strategy({**trainer, "strategy": "fsdp"}, multirun=True)
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # one SLURM task per device: Lightning launches nothing
    assert multirun_strategy({**trainer, "strategy": "ddp"}, multirun=True) is None


def test_logger_choices_compose():
    with initialize_config_module("bisenet_pl.conf", version_base="1.3"):
        assert set(compose("train", overrides=["logger=many"]).logger) == {"csv", "wandb"}
        assert set(compose("train", overrides=["logger=wandb"]).logger) == {"wandb"}
        assert not compose("train", overrides=["logger=none"]).logger
        wandb = compose("train", overrides=["logger=wandb", "experiment=ohem"]).logger.wandb
    assert wandb.group == "ohem" and wandb.mode == "auto" and wandb.project == "bisenet_pl"


def test_a_seed_sweep_reports_mean_and_spread(tmp_path):
    """`-m seed=0,1,2 module.lr=...`: per config, mIoU mean ± std over the seeds (n - 1)."""
    import yaml

    from bisenet_pl.reporting.sweep import load_sweep, seed_groups, write_summary

    runs = {0: ("module.lr=0.01", 0, 70.0), 1: ("module.lr=0.01", 1, 72.0), 2: ("module.lr=0.01", 2, 74.0),
            3: ("module.lr=0.05", 0, 60.0), 4: ("module.lr=0.05", 1, 61.0)}  # fmt: skip
    for job, (lr, seed, miou) in runs.items():
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([lr, f"seed={seed}"]))
        (tmp_path / str(job) / "results.json").write_text(
            json.dumps({"results": {"mIoU": miou}, "global_step": 9})
        )
    spread = {g["config"]: g for g in seed_groups(load_sweep(tmp_path))}
    assert (
        spread["module.lr=0.01"]["values"] == [70.0, 72.0, 74.0] and spread["module.lr=0.01"]["mean"] == 72.0
    )
    assert spread["module.lr=0.01"]["std"] == pytest.approx(2.0)
    assert spread["module.lr=0.05"]["std"] == pytest.approx(0.5**0.5)
    _, md = write_summary(load_sweep(tmp_path))
    assert "| module.lr=0.01 | 3 | 72.00 ± 2.00 | 70.00 | 74.00 |" in md.read_text()
