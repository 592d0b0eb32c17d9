"""ONNX export (bisenet_pl.export): one self-contained file, dynamic N/H/W, checked against PyTorch, and the
evaluation path on ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from bisenet_pl.checkpoints import save_checkpoint
from bisenet_pl.deploy.contract import META_KEY, ExportError, sidecar_path
from bisenet_pl.deploy.export.onnx import check_onnx, export_onnx
from bisenet_pl.deploy.runtime.onnxruntime import OnnxNet
from bisenet_pl.models import Segmentor

SHAPES = ((1, 3, 64, 128), (2, 3, 72, 100))  # two sizes; the second is batch 2 and not a multiple of 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> Segmentor:
    """Non-trivial BN statistics (so folding matters) and logits of order 1 (so 1e-4 is a real bound)."""
    torch.manual_seed(0)
    m = Segmentor()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
        m.decode_head.conv_seg.weight.normal_(0, 0.1, generator=g)
    return m.eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(model, out, {"test_scale": [512, 256]}, exporter="torchscript")


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_export_is_one_self_contained_file_with_the_contract(exported: Path) -> None:
    assert sorted(p.name for p in exported.parent.iterdir()) == ["model.onnx", "model.onnx.json"]
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)

    def dims(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, dims(inp)) == ("image", ["batch", 3, "height", "width"])
    assert (out.name, dims(out)) == ("logits", ["batch", 19, "height", "width"])
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    embedded = json.loads({p.key: p.value for p in proto.metadata_props}[META_KEY])
    sidecar = json.loads(sidecar_path(exported).read_text())
    assert sidecar == embedded
    assert sidecar["mean"] == [123.675, 116.28, 103.53] and sidecar["std"] == [58.395, 57.12, 57.375]
    assert len(sidecar["classes"]) == len(sidecar["palette"]) == 19 and sidecar["classes"][0] == "road"
    assert sidecar["test_scale"] == [512, 256] and sidecar["fused"] is True
    # no BatchNormalization left: the exported graph is the fused model
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}


def test_onnxruntime_matches_pytorch_on_two_sizes(exported: Path, model, caplog) -> None:
    caplog.set_level("INFO", logger="bisenet_pl.deploy")
    diffs = check_onnx(exported, model, SHAPES)
    assert len(diffs) == 2 and max(diffs) < 1e-4
    printed = caplog.text
    assert printed.count("max |onnxruntime - pytorch|") == 2


def test_a_wrong_export_fails_loudly(exported: Path, model, caplog) -> None:
    caplog.set_level("INFO", logger="bisenet_pl.deploy")
    other = Segmentor().eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.decode_head.conv_seg.bias.add_(1e-3)  # a tiny difference must be caught
    with pytest.raises(ExportError, match=r"max abs logit difference 0\.001"):
        check_onnx(exported, other, SHAPES)
    assert "max |onnxruntime - pytorch| = 0.001" in caplog.text


def test_dynamo_exporter_default(model, tmp_path: Path) -> None:
    """torch.onnx's default exporter (torch.export + onnxscript): one file, dynamic sizes work."""
    out = export_onnx(model, tmp_path / "d.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx", "d.onnx.json"]
    assert max(check_onnx(out, model, SHAPES)) < 1e-4
    assert json.loads(sidecar_path(out).read_text())["opset"] >= 18


def test_onnxnet_meta_and_calls(exported: Path, model, tmp_path: Path) -> None:
    net = OnnxNet(exported)
    assert net.num_classes == 19 and net.meta["test_scale"] == [512, 256]
    x = torch.randn(1, 3, 40, 88)
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 19, 40, 88) and out.dtype == torch.float32
    with torch.no_grad():
        assert (out - model(x)).abs().max() < 1e-4
    # without the sidecar the file's own metadata is used
    alone = tmp_path / "alone.onnx"
    alone.write_bytes(exported.read_bytes())
    assert OnnxNet(alone).meta == net.meta
    with pytest.raises(ExportError, match="no such ONNX file"):
        OnnxNet(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match="cannot load"):
        OnnxNet(tmp_path / "bad.onnx")


def test_export_cli_and_evaluation_on_onnxruntime(model, tmp_path: Path) -> None:
    """`python -m bisenet_pl.export` end to end, then `evaluate backend=onnxruntime` on its file gives the
    confusion matrix of the PyTorch model."""
    from bisenet_pl.data.cityscapes import CityscapesDataset
    from bisenet_pl.data.synthetic import make_synthetic_cityscapes
    from bisenet_pl.data.transforms import build_test_transform
    from bisenet_pl.evaluation.metrics import SegmentationMetric
    from bisenet_pl.inference.modes import segment

    ckpt = save_checkpoint(model, tmp_path / "model.pt", {"test_scale": [128, 64]})
    out = tmp_path / "exported" / "model.onnx"
    proc = _cli(
        "bisenet_pl.export",
        f"ckpt={ckpt}",
        f"out={out}",
        "exporter=torchscript",
        "check_shapes=[[1,3,64,128],[2,3,72,100]]",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("max |onnxruntime - pytorch|") == 2 and out.is_file()
    assert json.loads((tmp_path / "run" / "export.json").read_text())["onnx"] == str(out)

    data = make_synthetic_cityscapes(tmp_path / "cs", n_train=0, n_val=2, n_test=0, height=64, width=128)
    proc = _cli(
        "bisenet_pl.evaluate",
        f"ckpt={out}",
        "backend=onnxruntime",
        f"data.root={data}",
        f"data.synthetic_root={data}",
        "num_workers=0",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["backend"] == "onnxruntime" and results["test_scale"] == [128, 64]

    metric = SegmentationMetric(num_classes=19)
    dataset = CityscapesDataset(data, "val", transform=build_test_transform((128, 64)))
    for i in range(len(dataset)):
        item = dataset[i]
        pred = segment(model, item["image"].unsqueeze(0), tuple(item["label"].shape[-2:])).argmax(1)
        metric.update(pred, item["label"].unsqueeze(0))
    ours = metric.compute()["confusion_matrix"]
    theirs = torch.tensor(results["results"]["confusion_matrix"])
    assert int(ours.sum()) == int(theirs.sum())
    assert int((ours.to(theirs.dtype) - theirs).abs().sum()) <= 2 * int(ours.sum()) // 1000  # near-ties only


def test_export_cli_errors_are_readable(tmp_path: Path) -> None:
    proc = _cli(
        "bisenet_pl.export", f"ckpt={tmp_path / 'nope.ckpt'}", f"out={tmp_path / 'm.onnx'}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "nope.ckpt" in proc.stderr and "Traceback" not in proc.stderr
