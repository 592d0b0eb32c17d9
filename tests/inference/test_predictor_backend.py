"""`Predictor(..., backend=...)` and `python -m bisenet_pl.predict backend=...`: an exported model gives the
PyTorch model's masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bisenet_pl.deploy.export.onnx import export_onnx
from bisenet_pl.errors import ConfigError
from bisenet_pl.inference.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(trained_run) -> Path:
    return trained_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def onnx_file(ckpt, tmp_path_factory) -> Path:
    from bisenet_pl.checkpoints import load_model

    model = load_model(ckpt)
    return export_onnx(model, tmp_path_factory.mktemp("exp") / "model.onnx", model.meta, "torchscript")


def _images(tiny_data: Path) -> list[Path]:
    return sorted((tiny_data / "leftImg8bit" / "val").rglob("*.png"))


def test_onnx_file_on_onnxruntime_gives_the_torch_masks(ckpt, onnx_file, tiny_data) -> None:
    torch_predictor = Predictor(ckpt, device="cpu")
    onnx_predictor = Predictor(onnx_file, device="cpu", backend="onnxruntime")
    assert onnx_predictor.model is None and onnx_predictor.path_name == "onnxruntime fp32 (fused)"
    # the exported file carries the checkpoint's test scale and classes
    assert onnx_predictor.test_scale == torch_predictor.test_scale == (128, 64)
    assert onnx_predictor.class_names == torch_predictor.class_names
    same = total = 0
    for path in _images(tiny_data):
        a, b = torch_predictor(path), onnx_predictor(path)
        assert a.shape == b.shape == (64, 128) and a.dtype == b.dtype == np.uint8
        same, total = same + int((a == b).sum()), total + a.size
    assert same / total >= 0.999


def test_a_checkpoint_on_onnxruntime_is_exported_on_the_fly(ckpt, tiny_data) -> None:
    path = _images(tiny_data)[0]
    masks = Predictor(ckpt, backend="onnxruntime")(path), Predictor(ckpt)(path)
    assert (masks[0] == masks[1]).mean() >= 0.999


def test_an_onnx_file_without_its_backend_is_one_hint(onnx_file) -> None:
    with pytest.raises(ConfigError, match=r"model\.onnx is an exported ONNX file: add backend=onnxruntime"):
        Predictor(onnx_file)
    with pytest.raises(ConfigError, match="backend='tensorrt': choose one of torch, onnxruntime"):
        Predictor(onnx_file, backend="tensorrt")


def test_predict_cli_backend_onnxruntime(run_cli, ckpt, onnx_file, tiny_data, tmp_path) -> None:
    inputs = _images(tiny_data)[0].parent
    proc = run_cli(
        "bisenet_pl.predict",
        f"ckpt={onnx_file}",
        "backend=onnxruntime",
        f"input={inputs}",
        f"output={tmp_path / 'out'}",
        "outputs=[trainid]",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted((tmp_path / "out" / "trainid").iterdir())
    assert len(written) == len(list(inputs.glob("*.png"))) > 0
    reference = Predictor(ckpt)
    for png in written:
        source = inputs / f"{png.stem}_leftImg8bit.png"
        mask = np.asarray(Image.open(png))
        assert (mask == reference(source)).mean() >= 0.999

    proc = run_cli(
        "bisenet_pl.predict", f"ckpt={onnx_file}", f"input={inputs}", f"hydra.run.dir={tmp_path / 'r2'}"
    )
    assert proc.returncode != 0
    assert "add backend=onnxruntime" in proc.stderr and "Traceback" not in proc.stderr
