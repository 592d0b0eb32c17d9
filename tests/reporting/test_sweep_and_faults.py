"""The sweep report on a real 2x2 multirun (two learning rates x two seeds), a killed run's report, and
the one-line refusals: a folder that is no run, a run without metrics, a CSV cut by a kill."""

from __future__ import annotations

import html
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from _shared import cli_env, tiny_train_args, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def sweep(tiny_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    folder = root / "sweep"
    args = tiny_train_args(tiny_data, root, "trainer.max_steps=4", "trainer.val_check_interval=4",
                           "report=false", f"hydra.sweep.dir={folder}")  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "bisenet_pl.train", "-m", *args, "module.lr=0.01,0.05",
                           "seed=0,1"], cwd=root, env=cli_env(), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    return folder


def _cells(page: str, table: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table}">(.*?)</table>', page, re.S)
    assert body, f"no table {table}"
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)[1:]
    return [[html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]


def test_the_sweep_report_has_mean_and_std_over_seeds(sweep: Path, run_cli) -> None:
    proc = run_cli("bisenet_pl.report", str(sweep))
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (sweep / "report.html").read_text()
    by_lr: dict[str, list[float]] = {}
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        lr = re.search(r"module\.lr=([\d.]+)", overrides).group(1)
        by_lr.setdefault(f"module.lr={lr}", []).append(
            json.loads((job / "results.json").read_text())["results"]["mIoU"]
        )
    body = re.search(r'<table id="seeds">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)[1:]
    assert len(rows) == 2
    for row in rows:
        config = html.unescape(re.search(r"<td>(.*?)</td>", row).group(1))
        values = [float(v) for v in re.findall(r'data-value="([^"]+)"', row)]
        mean, std = values[0], values[1]
        assert mean == pytest.approx(statistics.fmean(by_lr[config]), abs=1e-12)
        assert std == pytest.approx(statistics.stdev(by_lr[config]), abs=1e-12)
    jobs = _cells(page, "jobs")
    assert [r[0] for r in jobs] == ["0", "1", "2", "3"] and all(r[5] == "done" for r in jobs)
    assert all(re.fullmatch(r"module\.lr=[\d.]+ seed=\d", r[1]) for r in jobs), jobs
    for name in ("sweep_miou", "sweep_loss", "sweep_val_miou"):
        assert (sweep / "report" / f"{name}.png").stat().st_size > 1000


def test_a_failed_job_is_listed_with_its_error(sweep: Path, tmp_path: Path, run_cli) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    failed = copy / "4"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text("- module.lr=0.1\n- seed=0\n")
    (failed / "train.log").write_text(
        "[2026-12-06 00:00:00,000][bisenet_pl.train][INFO] - run folder\n"
        "[2026-12-06 00:00:01,000][bisenet_pl.train][ERROR] - DatasetError: data/x: no such folder\n"
    )
    proc = run_cli("bisenet_pl.report", str(copy))
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _cells((copy / "report.html").read_text(), "jobs")
    assert len(jobs) == 5
    assert jobs[4][0] == "4" and jobs[4][2] == "n/a"
    assert jobs[4][5] == "failed: DatasetError: data/x: no such folder"


def test_a_killed_run_gets_a_report_of_its_finished_steps(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    run_dir = tmp_path / "run"
    args = tiny_train_args(tiny_data, tmp_path, "trainer.max_steps=2000", "trainer.val_check_interval=3",
                           f"hydra.run.dir={run_dir}")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "bisenet_pl.train", *args], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    metrics = run_dir / "csv" / "metrics.csv"

    def validated() -> bool:
        from bisenet_pl.reporting.runs import ReportError, read_metrics

        try:
            m = read_metrics(metrics) if metrics.is_file() else None
        except ReportError:
            return False
        return m is not None and m.has("val/mIoU") and (m.last_step or 0) >= 4

    try:
        wait_for(validated, 240, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    steps_logged = {line.split(",")[1] for line in metrics.read_text().splitlines()[1:]}
    report = run_cli("bisenet_pl.report", str(run_dir))
    assert report.returncode == 0, report.stderr[-3000:]
    page = (run_dir / "report.html").read_text()
    assert "missing: final results: no results.json yet" in page
    assert (
        "<img" in page
        and (run_dir / "report" / "losses.png").is_file()
        and (run_dir / "report" / "val.png").is_file()
    )
    rows = _cells(page, "validations")
    assert [r[0] for r in rows][:1] == ["2"]
    assert f"last step {max(int(float(s)) for s in steps_logged)}" in page
    # the grid predicts with the run's newest checkpoint, if one was saved before the kill
    if list((run_dir / "checkpoints").glob("*.ckpt")):
        assert (run_dir / "report" / "val_samples.png").is_file()


def _refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


def test_bad_folders_are_one_line(tmp_path: Path, run_cli) -> None:
    empty = tmp_path / "photos"
    empty.mkdir()
    (empty / "a.png").write_bytes(b"x")
    _refused(run_cli("bisenet_pl.report", str(empty)), str(empty), "not a run or sweep folder")
    _refused(run_cli("bisenet_pl.report", str(tmp_path / "nope")), "no such folder")
    started = tmp_path / "started"
    (started / "checkpoints").mkdir(parents=True)
    (started / "run_config.yaml").write_text("seed: 0\n")
    _refused(
        run_cli("bisenet_pl.report", str(started)), str(started), "a run without metrics", "csv/metrics.csv"
    )
    cut = tmp_path / "cut"
    (cut / "csv").mkdir(parents=True)
    (cut / "csv" / "metrics.csv").write_text("epoch,step,train/lo")
    _refused(run_cli("bisenet_pl.report", str(cut)), "metrics.csv", "truncated")
    assert sorted(p.name for p in cut.rglob("*")) == ["csv", "metrics.csv"]  # nothing written


def test_a_csv_cut_mid_row_reports_the_complete_rows(tmp_path: Path) -> None:
    from bisenet_pl.reporting.runs import load_run

    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,train/lr\n0,0,3.5,0.01\n0,1,3.1,0.02\n0,2,2.9,0.0"[:-3]
    )
    loaded = load_run(run)
    assert loaded.metrics is not None and loaded.metrics.last_step == 1
    assert loaded.metrics.series("train/loss")[1].tolist() == [3.5, 3.1]
    assert any("cut" in n for n in loaded.notes)
