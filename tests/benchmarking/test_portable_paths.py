"""What `make bench` writes into experiments/ names no machine path: commands and models are recorded
relative to the repository, a demo run's folder as `<run>`."""

from pathlib import Path

from bisenet_pl.speed.timing import command_line, portable


def test_paths_in_the_repository_become_relative_and_a_demo_run_is_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "outputs" / "demo" / "2026-12-02_03-20-30" / "checkpoints" / "last.ckpt"
    assert portable(ckpt, tmp_path) == "outputs/demo/<run>/checkpoints/last.ckpt"
    assert portable(f"data.root={tmp_path / 'data'}", tmp_path) == "data.root=data"
    assert portable("/elsewhere/on/this/machine/model.onnx", tmp_path) == "model.onnx"
    assert portable("--json", tmp_path) == "--json"


def test_a_recorded_command_has_no_absolute_path(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "experiments" / "bench_inference.json"
    line = command_line([str(tmp_path / "benchmarks" / "inference_speed.py"), "--output", str(out), "--json"])
    assert line == "python benchmarks/inference_speed.py --output experiments/bench_inference.json --json"
