"""`python -m bisenet_pl.benchmark` and `benchmarks/inference_speed.py` / `run_all.py`: what they time, count
and write (tiny sizes: these tests check the machinery, `make bench` measures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bisenet_pl.benchmark import benchmark, spec_from_config
from bisenet_pl.checkpoints import save_checkpoint
from bisenet_pl.errors import ConfigError
from bisenet_pl.inference.latency import latency_ms
from bisenet_pl.models import Segmentor
from bisenet_pl.models.complexity import count_macs
from bisenet_pl.speed.frames import parse_size

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf" / "benchmark.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**overrides):
    """benchmark.yaml without Hydra's groups, small and with an explicit output."""
    cfg = OmegaConf.load(CONF)
    del cfg["defaults"]
    base = {"size": "64x128", "warmup": 1, "repeats": 2, "images": 1, "device": "cpu", "output": None}
    for k, v in {**base, **overrides}.items():
        cfg[k] = v
    return cfg


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = Segmentor()
    with torch.no_grad():
        model.decode_head.conv_seg.weight.normal_(0, 0.1)
    # test_scale 128x64: fastest_net's self-check then runs at 64x128 (seconds, not tens of seconds)
    return save_checkpoint(model, tmp_path_factory.mktemp("bench") / "model.pt", {"test_scale": [128, 64]})


def test_helpers() -> None:
    assert parse_size("1024x2048") == (1024, 2048) and parse_size([512, 1024]) == (512, 1024)
    with pytest.raises(ConfigError, match="HxW"):
        parse_size("big")
    values = [0.3, 0.1, 0.2, 0.5, 0.4, 1.0]
    stats = latency_ms(values)
    for q in (50, 90, 99):
        assert stats[f"p{q}"] == pytest.approx(1000 * np.percentile(values, q))
    assert stats["min"] == pytest.approx(100.0) and stats["mean"] == pytest.approx(1000 * np.mean(values))
    cfg = _cfg(fuse=True, channels_last=True, precision="bf16", size="1024x2048")
    name = spec_from_config(cfg).file_name()
    assert name == "bench_inference_cpu_torch_fused_cl_bf16_1024x2048.json"
    fast = spec_from_config(_cfg(fast=True, size="64x128")).file_name()
    assert fast == "bench_inference_cpu_torch_fast_64x128.json"


def test_cli_times_the_full_predict_path_and_writes_json(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bisenet_pl.benchmark", f"ckpt={ckpt}", "size=64x128", "warmup=1", "repeats=3",
         "images=2", "fuse=true", "channels_last=true", "fast_argmax=true", "device=cpu", f"output={out}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["path"] == "fused + channels_last + fp32 + fast argmax"
    assert len(result["times_s"]) == 3 and result["warmup"] == 1 and result["size"] == [64, 128]
    assert result["fps"] == pytest.approx(3 / sum(result["times_s"]), rel=1e-2)
    assert result["latency_ms"]["p90"] >= result["latency_ms"]["p50"] > 0
    assert result["memory"]["peak_rss_mb"] > 100
    assert result["parameters"] == 3_358_883  # backbone + decode head (docs/reproduction.md#speed)
    assert result["gmacs"] == pytest.approx(count_macs(Segmentor(), (1, 3, 64, 128))["total"] / 1e9, abs=0.01)
    assert result["agreement_with_fp32_eager"] >= 0.999
    assert result["command"].startswith("python -m bisenet_pl.benchmark ckpt=")
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["cpu_count"] >= 1
    assert "fps" in proc.stdout and "p90" in proc.stdout and "GMACs" in proc.stdout


def test_plain_reference_and_onnxruntime_backends(ckpt: Path, tmp_path: Path) -> None:
    plain = benchmark(_cfg(ckpt=str(ckpt)))
    assert plain["path"] == "plain fp32 eager (unfused, NCHW)" and plain["agreement_with_fp32_eager"] is None
    ort = benchmark(_cfg(ckpt=str(ckpt), backend="onnxruntime", exporter="torchscript"))
    assert ort["path"].startswith("onnxruntime") and ort["agreement_with_fp32_eager"] >= 0.999
    # an exported file directly
    from bisenet_pl.checkpoints import load_model
    from bisenet_pl.deploy.export.onnx import export_onnx

    onnx_file = export_onnx(load_model(ckpt), tmp_path / "m.onnx", exporter="torchscript")
    direct = benchmark(_cfg(ckpt=str(onnx_file), backend="onnxruntime"))
    assert direct["parameters"] is None and direct["fps"] > 0
    with pytest.raises(ConfigError, match="backend=onnxruntime"):
        benchmark(_cfg(ckpt=str(onnx_file)))


def test_fast_true_is_the_segmenters_choice(ckpt: Path) -> None:
    from bisenet_pl.checkpoints import load_model
    from bisenet_pl.inference.accelerate import fastest_net

    result = benchmark(_cfg(ckpt=str(ckpt), fast=True))
    _, name = fastest_net(load_model(ckpt), "cpu")
    assert result["path"] == name + " + fast argmax"
    assert result["agreement_with_fp32_eager"] >= 0.999


def test_bad_settings_are_config_errors() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            benchmark(_cfg(device="cuda"))
    with pytest.raises(ConfigError, match="repeats"):
        benchmark(_cfg(repeats=0))
    with pytest.raises(ConfigError, match="precision"):
        benchmark(_cfg(precision="int4"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_reports_cuda_memory(ckpt: Path) -> None:
    result = benchmark(_cfg(ckpt=str(ckpt), device="cuda", precision="fp16", fuse=True, channels_last=True))
    assert result["memory"]["cuda_max_allocated_mb"] > 0
    assert result["agreement_with_fp32_eager"] >= 0.999


def test_inference_speed_script_and_summary(ckpt: Path, tmp_path: Path) -> None:
    """The `make bench` inference script end to end on tiny frames, and the summary table from its JSON."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import inference_speed
        import run_all
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    out = tmp_path / "inference.json"
    n_threads = torch.get_num_threads()
    try:
        result = inference_speed.main(
            ["--ckpt", str(ckpt), "--sizes", "64x128,96x192", "--repeats", "2", "--images", "1",
             "--threads", "1", "--val-images", "2",
             "--exporter", "torchscript", "--output", str(out)]
        )  # fmt: skip
    finally:
        torch.set_num_threads(n_threads)  # the script sets the process's thread count
    assert json.loads(out.read_text())["results"].keys() == {"64x128", "96x192"}
    rows = result["results"]["96x192"]
    ref = rows[inference_speed.REFERENCE]
    assert ref["ratio"] == 1.0 and len(ref["times_ms"]) == 2
    for name, small in result["results"]["64x128"].items():  # fp32 paths keep the logits (first size)
        if name != inference_speed.REFERENCE and "bf16" not in name:
            assert small["max_logit_diff"] < 1e-4, name
    assert any("fast argmax" in name for name in rows)
    assert result["fast_true_picks"] in rows
    assert result["val_scale"] == [64, 128] and result["val_agreement"].keys() == rows.keys()
    assert result["val_agreement"][inference_speed.REFERENCE] == 1.0
    table = out.with_suffix(".md").read_text()
    assert table.count("\n|") >= len(rows) + 1
    assert str(ckpt.parent) not in table and str(ckpt.parent) not in out.read_text()  # no machine paths
    train = {"threads": 2, "plain_s": 1.0, "lightning_s": 1.02, "ratio": 1.02, "batch": 2,
             "crop": [512, 512], "timed_iterations_each": 8, "command": "x"}  # fmt: skip
    data = {"decode_ms_per_image": 52.3, "decode_images_per_s": 19.1, "pipeline_ms_per_image": 78.6,
            "pipeline_images_per_s": 12.7, "pipeline_over_decode_time": 1.5, "command": "x"}  # fmt: skip
    text = run_all.summary_markdown(result, train, data)
    assert "| plain fp32 eager (unfused, NCHW) |" in text and "**1.020x**" in text and "goal" in text
