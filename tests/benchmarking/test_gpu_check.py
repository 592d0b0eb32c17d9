"""The prepared GPU check, run on CPU: the same script and code the day a GPU comes, at toy size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from gpu_check import MMSEG_MEMORY_GB, Plan, markdown, row_result

REPO = Path(__file__).resolve().parents[2]


def test_a_row_line_is_median_step_plus_median_wait_after_warmup():
    plan = Plan(steps=6, timed_from=2)
    recorded = {
        "step_s": [5.0, 3.0, 0.30, 0.20, 0.20, 0.25],  # two warm-up steps, then the timed ones
        "wait_s": [1.0, 0.05, 0.05, 0.04, 0.06],  # before steps 1..5
        "loss": [9.0, 8.5, 8.0, 7.0, 6.5, 6.0],
        "peak_gb": 7.123,
    }
    line = row_result("4x4", plan, recorded, batch=4)
    assert line["s_per_iter"] == round(0.225 + 0.05, 4)
    assert line["data_wait_share"] == round(0.05 / 0.275, 3)
    assert line["peak_gb"] == 7.12 and line["mmseg_gb"] == MMSEG_MEMORY_GB["4x4"] == 7.64
    assert line["loss_first"] == 9.0 and line["loss_last"] == 6.0
    assert line["loss_finite"] and line["loss_falling"]
    recorded["loss"][3] = float("nan")
    line = row_result("4x4", plan, recorded, batch=4)
    assert not line["loss_finite"] and not line["loss_falling"]


def _python_without_our_install(tmp_path: Path) -> Path:
    """A Python that sees our dependencies but not bisenet_pl, as on the borrowed GPU box: a venv whose
    .pth adds this venv's site-packages, where the editable install's own .pth is then not processed."""
    box = tmp_path / "box"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(box)], check=True)
    (next(box.glob("lib/python*/site-packages")) / "deps.pth").write_text(sysconfig.get_paths()["purelib"])
    python = box / "bin" / "python"
    probe = subprocess.run([python, "-c", "import bisenet_pl"], cwd=tmp_path, capture_output=True)
    assert probe.returncode != 0  # the check must bring its own copy of the package
    return python


def test_cpu_smoke_runs_the_whole_check_through_the_script(tmp_path):
    out = tmp_path / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": str(_python_without_our_install(tmp_path))}
    proc = subprocess.run(  # from the checkout's root, as the device machine runs it
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu-smoke", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["smoke"] is True and report["device"].startswith("CPU")
    assert report["png_decoder"] in ("wuffs", "libspng")  # what the data wait was measured with
    assert [r["row"] for r in report["rows"]] == ["4x4", "4x8", "fp16", "ohem"]
    for row in report["rows"]:
        assert "error" not in row, row
        assert row["steps"] == Plan.smoke().steps and row["loss_finite"] and row["s_per_iter"] > 0
        assert 0 <= row["data_wait_share"] < 1
    assert {r["row"]: r["batch_per_gpu"] for r in report["rows"]} == {
        "4x4": 4,
        "4x8": 8,
        "fp16": 4,
        "ohem": 4,
    }
    assert [r["path"] for r in report["fps"]] == list(Plan.smoke().fps_paths)
    assert all(r["fps"] > 0 for r in report["fps"])
    assert report["ddp"]["ran"] is False and "2 GPUs" in report["ddp"]["reason"]
    table = (out / "gpu_check.md").read_text()
    assert table == markdown(report) and report["device"] in table and "| ohem | 4 |" in table
    assert f"PNGs decoded by {report['png_decoder']}" in table
