"""`benchmarks/train_step.py`: Lightning and the plain loop do the same work; the JSON contract."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_train_step_benchmark_runs_both_loops_and_reports_the_ratio(tmp_path: Path) -> None:
    out = tmp_path / "train_step.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_step.py"), "--crop", "64", "--iters", "2",
         "--threads", "1", "--json", "--output", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last == json.loads(out.read_text())
    assert last["lightning_s"] > 0 and last["plain_s"] > 0
    pairs = zip(last["lightning_all_s"], last["plain_all_s"], strict=True)
    assert last["ratio"] == pytest.approx(statistics.median(a / b for a, b in pairs), rel=1e-2)
    assert len(last["lightning_all_s"]) == len(last["plain_all_s"]) == 2  # warm-up iteration excluded
    # same network, loss, data and dropout masks: the first batch's loss is the same number
    assert last["same_first_loss"] is True
    assert last["first_loss"]["lightning"] == pytest.approx(last["first_loss"]["plain"], rel=1e-5)
    assert last["batch"] == 2 and last["crop"] == [64, 64] and "machine" in last
