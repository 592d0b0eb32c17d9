"""The prepared GPU check's compiled row: `4x4+compile` trains the 4x4 row with `module.compile=true`, and
its line (s/iteration, data wait share) sits beside the eager one."""

from __future__ import annotations

from pathlib import Path

from gpu_check import Plan, row_result, train_command


def test_compile_row_is_the_4x4_row_compiled(tmp_path: Path) -> None:
    eager = train_command("4x4", Plan(), tmp_path / "d", tmp_path / "r")
    compiled = train_command("4x4+compile", Plan(), tmp_path / "d", tmp_path / "r")
    assert "experiment=4x4" in compiled and "module.compile=true" in compiled
    assert "module.compile=true" not in eager
    assert [a for a in compiled if a != "module.compile=true"] == eager


def test_compile_row_line_has_step_time_and_data_wait() -> None:
    recorded = {"step_s": [1.0] * 12, "wait_s": [0.25] * 11, "loss": [3.0] * 6 + [2.0] * 6, "peak_gb": 6.0}
    line = row_result("4x4+compile", Plan(), recorded, 4)
    assert line["s_per_iter"] == 1.25 and line["data_wait_share"] == 0.2
    assert line["mmseg_gb"] == 7.64  # the 4x4 row's mmseg memory
