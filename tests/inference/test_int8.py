"""INT8 export (`format=onnx-int8|openvino-int8`): calibrated on the train split, gated on the val split
against fp32, refused (not written, exit != 0, both mIoUs said) when the drop is over the gate; the files
that pass run in evaluate, predict and benchmark."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from _shared import int8_export

from bisenet_pl.deploy.contract import sidecar_path
from bisenet_pl.deploy.export.quantize import keep_float_nodes
from bisenet_pl.errors import ConfigError

GATE_LINE = re.compile(
    r"INT8 vs fp32 on 3 val images: mIoU (\d+\.\d\d) vs (\d+\.\d\d) "
    r"\(drop (-?\d+\.\d\d) points, gate 0\.5\), argmax agreement (\d+\.\d\d) %"
)


@pytest.mark.slow
def test_onnx_int8_passes_the_gate_and_evaluates_to_its_recorded_miou(
    run_cli, trained_run, tiny_data, tmp_path
):
    out = tmp_path / "model.int8.onnx"
    proc = int8_export(run_cli, trained_run, tiny_data, tmp_path, "onnx-int8", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = GATE_LINE.search(proc.stdout)
    assert printed, proc.stdout
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["format"] == "onnx-int8" and meta["precision"] == "int8"
    assert meta["calibration"]["images"] == 4 and meta["calibration"]["split"] == "train"
    assert any("conv_seg" in n for n in meta["calibration"]["float_nodes"])  # the classifier stayed float
    gate = meta["gate"]
    assert gate["images"] == 3 and gate["split"] == "val" and gate["max_miou_drop"] == 0.5
    assert gate["miou_drop"] <= 0.5 and gate["agreement"] > 90
    assert f"{gate['int8_miou']:.2f}" == printed[1] and f"{gate['fp32_miou']:.2f}" == printed[2]
    assert out.stat().st_size < 6e6  # int8 weights: about a quarter of the fp32 file's 13 MB

    # evaluate on ONNX Runtime runs the INT8 file and measures what the gate recorded
    proc = run_cli(
        "bisenet_pl.evaluate",
        f"ckpt={out}",
        "backend=onnxruntime",
        f"data.root={tiny_data}",
        f"data.synthetic_root={tiny_data}",
        "num_workers=0",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["results"]["mIoU"] == pytest.approx(gate["int8_miou"], abs=1e-6)

    # benchmark times it on the same backend
    proc = run_cli(
        "bisenet_pl.benchmark", f"ckpt={out}", "backend=onnxruntime", "size=64x128", "device=cpu",
        "warmup=1", "repeats=2", "images=1", "output=null", f"hydra.run.dir={tmp_path / 'bench'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnxruntime int8 (fused)" in proc.stdout


@pytest.mark.slow
def test_a_model_over_the_gate_is_refused_and_not_written(run_cli, trained_run, tiny_data, tmp_path):
    out = tmp_path / "model.int8.onnx"
    proc = int8_export(run_cli, trained_run, tiny_data, tmp_path, "onnx-int8", out, "gate.max_miou_drop=-1")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    message = re.search(
        r"refused, not written: the INT8 model's mIoU is (\d+\.\d\d) against (\d+\.\d\d) for fp32 on 3 val "
        r"images, a drop of (-?\d+\.\d\d) points > gate\.max_miou_drop=-1",
        proc.stderr,
    )
    assert message, proc.stderr[-2000:]
    assert float(message[3]) == pytest.approx(float(message[2]) - float(message[1]), abs=0.011)
    assert (
        sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("run_")) == []
    )  # no file, no temp


@pytest.mark.slow
def test_openvino_int8_passes_and_predict_runs_it(run_cli, trained_run, tiny_data, tmp_path):
    from bisenet_pl.inference.predictor import Predictor

    out = tmp_path / "int8" / "model.int8.xml"
    proc = int8_export(run_cli, trained_run, tiny_data, tmp_path, "openvino-int8", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.int8.bin",
        "model.int8.xml",
        "model.int8.xml.json",
    ]
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["format"] == "openvino-int8" and meta["precision"] == "int8"
    assert meta["calibration"]["images"] == 4 and meta["gate"]["miou_drop"] <= 0.5

    # the Python API and the predict command run the IR; the masks agree with fp32 as the gate measured
    int8 = Predictor(out, backend="openvino")
    assert int8.path_name == "openvino int8 (fused)"
    fp32 = Predictor(trained_run / "checkpoints" / "last.ckpt")
    images = sorted((tiny_data / "leftImg8bit" / "val").rglob("*.png"))
    same = sum(int((int8(p) == fp32(p)).sum()) for p in images) / sum(int8(p).size for p in images)
    assert 100 * same == pytest.approx(meta["gate"]["agreement"], abs=0.5)
    proc = run_cli(
        "bisenet_pl.predict", f"ckpt={out}", "backend=openvino", f"input={images[0]}",
        f"output={tmp_path / 'pred'}", "outputs=[trainid]", f"hydra.run.dir={tmp_path / 'run_pred'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (mask_png,) = (tmp_path / "pred" / "trainid").iterdir()
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(mask_png)), int8(images[0]))


def test_keep_float_patterns_find_layers_by_node_or_weight_name() -> None:
    nodes = [
        ("/backbone/detail/Conv", ["image", "backbone.detail.0.weight"]),
        ("node_Conv_91", ["relu_39", "decode_head.conv_seg.weight"]),  # the dynamo exporter's names
        ("/decode_head/conv_seg/Conv", ["x", "w"]),  # the TorchScript exporter's
    ]
    assert keep_float_nodes(nodes, ["conv_seg"]) == ["node_Conv_91", "/decode_head/conv_seg/Conv"]
    assert keep_float_nodes(nodes, ["detail", r"conv_seg\.weight$"]) == [
        "/backbone/detail/Conv",
        "node_Conv_91",
    ]
    with pytest.raises(ConfigError, match=r"calibration\.keep_float: 'conv_sge' matches no layer"):
        keep_float_nodes(nodes, ["conv_sge"])
    with pytest.raises(ConfigError, match=r"calibration\.keep_float: '\(' is not a regular expression"):
        keep_float_nodes(nodes, ["("])
