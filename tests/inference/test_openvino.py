"""OpenVINO fp32 (`backend=openvino`, `export format=openvino`): the IR keeps the PyTorch logits to 1e-4 on
dynamic batch and sizes, carries its meta, and a wrong one is refused loudly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _shared import randomize_bn

from bisenet_pl.checkpoints import save_checkpoint
from bisenet_pl.deploy.contract import ExportError, sidecar_path
from bisenet_pl.deploy.export.onnx import check_fp32, export_onnx
from bisenet_pl.deploy.export.openvino import convert, save_ir
from bisenet_pl.deploy.runtime.openvino import OpenVinoNet
from bisenet_pl.models import Segmentor

SHAPES = ((1, 3, 64, 128), (2, 3, 72, 100))  # batch 1 and 2; 72x100 is not a multiple of 32

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> Segmentor:
    torch.manual_seed(0)
    m = Segmentor()
    randomize_bn(m, seed=2)  # BN folding matters, logits of order 1: 1e-4 is a real bound
    m.meta = {"test_scale": [128, 64]}
    return m.eval()


@pytest.fixture(scope="module")
def ir(model, tmp_path_factory) -> Path:
    ov_model, meta = convert(model, model.meta, exporter="torchscript")
    return save_ir(ov_model, tmp_path_factory.mktemp("ov") / "model.xml", {**meta, "format": "openvino"})


def test_the_ir_keeps_the_pytorch_logits_on_dynamic_shapes(ir: Path, model, caplog) -> None:
    caplog.set_level("INFO", logger="bisenet_pl.deploy")
    assert sorted(p.name for p in ir.parent.iterdir()) == ["model.bin", "model.xml", "model.xml.json"]
    net = OpenVinoNet(ir)
    assert net.name == "openvino fp32 (fused)" and net.num_classes == 19
    diffs = check_fp32(net, model, SHAPES, where=str(ir), runtime="openvino")
    assert len(diffs) == 2 and max(diffs) < 1e-4
    assert caplog.text.count("max |openvino - pytorch|") == 2
    # fp32 weights on disk: 3.3 M parameters x 4 bytes, not fp16's half
    assert ir.with_suffix(".bin").stat().st_size > 12e6


def test_the_ir_carries_the_onnx_sidecar_meta(ir: Path, model, tmp_path: Path) -> None:
    onnx_meta = json.loads(
        sidecar_path(export_onnx(model, tmp_path / "m.onnx", model.meta, "torchscript")).read_text()
    )
    ov_meta = json.loads(sidecar_path(ir).read_text())
    for key in ("classes", "palette", "mean", "std", "test_scale", "num_classes", "input", "output", "fused"):
        assert ov_meta[key] == onnx_meta[key], key
    # without the sidecar, the .xml's own rt_info is read
    alone = tmp_path / "alone"
    alone.mkdir()
    for suffix in (".xml", ".bin"):
        (alone / f"model{suffix}").write_bytes(ir.with_suffix(suffix).read_bytes())
    assert OpenVinoNet(alone / "model.xml").meta == ov_meta
    # and OpenVINO reads our ONNX file directly, with its embedded meta
    assert OpenVinoNet(tmp_path / "m.onnx").meta["test_scale"] == [128, 64]


def test_the_one_checker_catches_a_wrong_ir(ir: Path, model) -> None:
    other = Segmentor().eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.decode_head.conv_seg.bias.add_(1e-3)
    with pytest.raises(ExportError, match=r"openvino and PyTorch differ .* max abs logit difference 0\.001"):
        check_fp32(OpenVinoNet(ir), other, SHAPES[:1], where=str(ir), runtime="openvino")


@pytest.mark.slow
def test_openvino_traces_pytorch_directly_too(model) -> None:
    ov_model, meta = convert(model, model.meta, via="pytorch")
    assert meta["converter"] == "openvino.convert_model from PyTorch"
    net = OpenVinoNet(ov_model)
    assert [o.get_any_name() for o in net.compiled.inputs] == ["image"]
    assert max(check_fp32(net, model, SHAPES, runtime="openvino")) < 1e-4


def test_bad_files_are_one_message(ir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no such model file"):
        OpenVinoNet(tmp_path / "missing.xml")
    (tmp_path / "lonely.xml").write_text(ir.read_text())
    with pytest.raises(ExportError, match=r"lonely\.xml: its weights lonely\.bin are missing"):
        OpenVinoNet(tmp_path / "lonely.xml")
    (tmp_path / "bad.xml").write_text("<net>not a model")
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(ExportError, match=r"bad\.xml: OpenVINO cannot read it"):
        OpenVinoNet(tmp_path / "bad.xml")


def test_without_openvino_the_message_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'bisenet_pl\[deploy\]'"):
        OpenVinoNet("model.xml")


def test_predictor_on_openvino_gives_the_torch_masks(model, ir: Path) -> None:
    from bisenet_pl.data.synthetic import render_scene
    from bisenet_pl.inference.predictor import Predictor

    rgb = render_scene([3, 1, 9], 64, 128)["image"]
    reference = Predictor(model, test_scale=None)(rgb)
    for source in (ir, model):  # the IR as it is, a PyTorch model converted on the fly
        masks = Predictor(source, backend="openvino", test_scale=None)(rgb)
        assert masks.shape == reference.shape and masks.dtype == np.uint8
        assert (masks == reference).mean() >= 0.999


@pytest.mark.slow
def test_export_cli_format_openvino(model, run_cli, tmp_path: Path) -> None:
    ckpt = save_checkpoint(model, tmp_path / "model.pt", {"test_scale": [128, 64]})
    out = tmp_path / "ir" / "model.xml"
    common = [
        f"ckpt={ckpt}",
        "format=openvino",
        "exporter=torchscript",
        "check_shapes=[[1,3,64,128],[2,3,72,100]]",
    ]
    proc = run_cli("bisenet_pl.export", *common, f"out={out}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("max |openvino - pytorch|") == 2 and "OpenVINO matches PyTorch" in proc.stdout
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["format"] == "openvino" and meta["precision"] == "fp32" and meta["test_scale"] == [128, 64]

    # tolerance 0 cannot be met: a loud failure, and nothing left under the deployable names
    bad = tmp_path / "bad" / "model.xml"
    proc = run_cli(
        "bisenet_pl.export", *common, f"out={bad}", "tolerance=0", f"hydra.run.dir={tmp_path / 'r2'}"
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "openvino and PyTorch differ" in proc.stderr and "> tolerance 0" in proc.stderr
    assert sorted(p.name for p in bad.parent.iterdir()) == [
        "model.bin.failed",
        "model.xml.failed",
        "model.xml.json.failed",
    ]

    proc = run_cli(
        "bisenet_pl.export", *common, f"out={tmp_path / 'model.onnx'}", f"hydra.run.dir={tmp_path / 'r3'}"
    )
    assert proc.returncode != 0 and "format=openvino writes a file whose name ends in .xml" in proc.stderr
