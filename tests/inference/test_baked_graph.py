"""Graphs that need nothing around them (`python -m bisenet_pl.export ... preprocess=true argmax=true`):
uint8 RGB in, normalised inside, class map out; each flag alone or both, checked against PyTorch at
export, and run by the same callers as a plain export with the same masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _shared import int8_export, randomize_bn

from bisenet_pl.checkpoints import save_checkpoint
from bisenet_pl.data.preprocess import preprocess
from bisenet_pl.deploy.contract import ExportError, GraphContract, sidecar_path
from bisenet_pl.deploy.export.onnx import check_onnx, export_onnx
from bisenet_pl.deploy.runtime.baked import BakedNet, adapt
from bisenet_pl.deploy.runtime.onnxruntime import OnnxNet
from bisenet_pl.errors import ConfigError
from bisenet_pl.inference.modes import InferenceConfig, require_logits, segment
from bisenet_pl.models import Segmentor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A BiSeNetV2 with every part but few channels: exports in about a second.
TINY_MODEL = dict(
    aux_heads=False,
    detail_channels=(16, 16, 32),
    semantic_channels=(8, 16, 32, 32),
    bga_channels=32,
    decode_channels=64,
    semantic_expansion_ratio=2,
)
SHAPES = ((1, 3, 64, 128), (2, 3, 72, 100))  # the second: batch 2, not a multiple of 32
#: (preprocess, argmax, layout) -> the file name; layout None is the default (nhwc with preprocess).
COMBINATIONS = {
    (False, False, None): "plain.onnx",
    (True, False, None): "preprocess.onnx",
    (False, True, None): "argmax.onnx",
    (True, True, None): "both.onnx",
    (True, True, "nchw"): "both_nchw.onnx",
}


@pytest.fixture(scope="module")
def model() -> Segmentor:
    torch.manual_seed(0)
    m = Segmentor(**TINY_MODEL)
    randomize_bn(m, classifier_std=0.5)
    return m.eval()


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory) -> dict[tuple, Path]:
    folder = tmp_path_factory.mktemp("baked")
    return {
        combo: export_onnx(
            model,
            folder / name,
            {"test_scale": [128, 64]},
            exporter="torchscript",
            contract=GraphContract.from_options(*combo),
        )
        for combo, name in COMBINATIONS.items()
    }


@pytest.fixture(scope="module")
def street_images() -> list[np.ndarray]:
    """Three synthetic street frames, uint8 RGB (H, W, 3), of two sizes."""
    from bisenet_pl.data.synthetic import render_scene

    sizes = ((64, 128), (64, 128), (72, 100))
    return [render_scene([3, 1, i], h, w)["image"] for i, (h, w) in enumerate(sizes)]


def test_each_combination_exports_checks_itself_and_says_which(exports, model) -> None:
    for (pre, argmax, layout), path in exports.items():
        diffs = check_onnx(path, model, SHAPES)
        assert len(diffs) == 2
        assert max(diffs) <= 1e-4  # logits within 1e-4, or at most 0.01 % of the labels differ
        sidecar = json.loads(sidecar_path(path).read_text())
        embedded = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["bisenet_pl"])
        assert sidecar == embedded
        chosen = layout or ("nhwc" if pre else "nchw")
        assert sidecar["graph"] == {
            "input_dtype": "uint8" if pre else "float32",
            "input_layout": chosen,
            "normalised_inside": pre,
            "output": "labels" if argmax else "logits",
        }
        proto = onnx.load(str(path))
        (inp,), (out,) = proto.graph.input, proto.graph.output
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims == (
            ["batch", "height", "width", 3] if chosen == "nhwc" else ["batch", 3, "height", "width"]
        )
        uint8, fp32 = onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT
        assert inp.type.tensor_type.elem_type == (uint8 if pre else fp32)
        assert (out.name, out.type.tensor_type.elem_type) == (
            ("labels", uint8) if argmax else ("logits", fp32)
        )
        assert len(out.type.tensor_type.shape.dim) == (3 if argmax else 4)
        assert isinstance(adapt(OnnxNet(path)), BakedNet) == (pre or argmax)


def test_masks_equal_the_plain_exports_on_street_frames(exports, street_images) -> None:
    plain = OnnxNet(exports[(False, False, None)])
    for combo, path in exports.items():
        net = adapt(OnnxNet(path))
        for rgb in street_images:
            x = preprocess(rgb, None)
            expected = segment(plain, x).argmax(1)
            assert torch.equal(segment(net, x).argmax(1), expected), combo  # what evaluate runs
            if isinstance(net, BakedNet):
                assert torch.equal(net.labels(x), expected), combo
                if net.takes_uint8:  # the original pixels, as Predictor feeds them
                    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None]
                    assert torch.equal(segment(net, pixels, cfg=InferenceConfig()).argmax(1), expected)


def test_a_labels_graph_hands_back_its_own_class_map(exports, street_images) -> None:
    net = adapt(OnnxNet(exports[(True, True, None)]))
    assert isinstance(net, BakedNet)
    rgb = np.stack(street_images[:2])  # (2, 64, 128, 3) uint8: what a decoder gives
    labels = net.native(rgb)
    assert labels.dtype == np.uint8 and labels.shape == (2, 64, 128)
    logits = OnnxNet(exports[(False, False, None)])(torch.cat([preprocess(im, None) for im in rgb]))
    assert np.array_equal(labels, logits.argmax(1).numpy())


def test_a_wrong_dtype_input_is_one_readable_error(exports) -> None:
    path = exports[(True, True, None)]
    net = adapt(OnnxNet(path))
    assert isinstance(net, BakedNet)
    with pytest.raises(ExportError, match=r"both\.onnx takes image: \(N, H, W, 3\) uint8 RGB.*got float32"):
        net.native(np.zeros((1, 64, 128, 3), np.float32))
    with pytest.raises(ExportError, match=r"got uint8 \(1, 3, 64, 128\)"):
        net.native(np.zeros((1, 3, 64, 128), np.uint8))  # NCHW into an NHWC graph


def test_multi_pass_modes_need_logits(exports, street_images) -> None:
    labels_graph = adapt(OnnxNet(exports[(True, True, None)]))
    for mode in ("slide", "msflip"):
        with pytest.raises(
            ConfigError, match=r"argmax=true.*mode=(slide|ms\+flip).*export without argmax=true"
        ):
            require_logits(labels_graph, InferenceConfig.from_mode(mode))
    require_logits(labels_graph, InferenceConfig.from_mode("whole"))  # no error

    # A preprocess-only graph gets the exact uint8 pixels back from every mode's normalised tensors.
    logits_graph = adapt(OnnxNet(exports[(True, False, None)]))
    plain = OnnxNet(exports[(False, False, None)])
    cfg = InferenceConfig.from_mode("msflip", box=None, scales=(0.75, 1.0))
    require_logits(logits_graph, cfg)
    x = preprocess(street_images[0], None)
    assert torch.equal(segment(logits_graph, x, cfg=cfg).argmax(1), segment(plain, x, cfg=cfg).argmax(1))


def test_a_wrong_baked_export_fails_loudly(exports, model, capsys) -> None:
    other = Segmentor(**TINY_MODEL)
    randomize_bn(other, seed=5, classifier_std=0.5)
    with pytest.raises(
        ExportError, match=r"labels differ from PyTorch's argmax.*% equal.*top-2 logit margin"
    ):
        check_onnx(exports[(True, True, None)], other.eval(), SHAPES[:1])
    with pytest.raises(ExportError, match=r"uint8 input: max abs logit difference"):
        check_onnx(exports[(True, False, None)], other.eval(), SHAPES[:1])


@pytest.mark.slow
def test_export_cli_then_evaluate_whole_and_a_readable_slide_refusal(
    model, exports, run_cli, tmp_path
) -> None:
    """`export preprocess=true argmax=true` end to end; `evaluate backend=onnxruntime` on its file gives
    the plain export's confusion matrix; `mode=slide` is refused in one message."""
    from bisenet_pl.data.synthetic import make_synthetic_cityscapes

    ckpt = save_checkpoint(model, tmp_path / "model.pt", {"test_scale": [128, 64]})
    out = tmp_path / "m.onnx"
    proc = run_cli(
        "bisenet_pl.export",
        f"ckpt={ckpt}",
        f"out={out}",
        "preprocess=true",
        "argmax=true",
        "exporter=torchscript",
        "check_shapes=[[1,3,64,128]]",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "labels: 100.0000 % equal" in proc.stdout or "labels: 99.99" in proc.stdout
    assert json.loads(sidecar_path(out).read_text())["graph"]["output"] == "labels"

    data = make_synthetic_cityscapes(tmp_path / "cs", n_train=0, n_val=2, n_test=0, height=64, width=128)
    results = {}
    for name, path in (("baked", out), ("plain", exports[(False, False, None)])):
        proc = run_cli(
            "bisenet_pl.evaluate",
            f"ckpt={path}",
            "backend=onnxruntime",
            f"data.root={data}",
            f"data.synthetic_root={data}",
            "num_workers=0",
            f"hydra.run.dir={tmp_path / name}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[name] = json.loads((tmp_path / name / "results.json").read_text())["results"]
    assert results["baked"]["confusion_matrix"] == results["plain"]["confusion_matrix"]

    proc = run_cli(
        "bisenet_pl.evaluate", f"ckpt={out}", "backend=onnxruntime", "mode=slide", f"data.root={data}"
    )
    assert proc.returncode != 0
    assert "argmax=true" in proc.stderr and "mode=slide" in proc.stderr and "Traceback" not in proc.stderr


def test_predictor_on_baked_files_gives_the_plain_exports_masks(exports, street_images) -> None:
    """`Predictor("m.onnx", backend="onnxruntime")`: the same masks from every flag combination when the
    image is segmented at its own size; a preprocess graph also through a test-scale resize."""
    from bisenet_pl.inference.predictor import Predictor

    plain = Predictor(str(exports[(False, False, None)]), backend="onnxruntime", test_scale=None)
    for combo, path in exports.items():
        predictor = Predictor(str(path), backend="onnxruntime", test_scale=None)
        for rgb in street_images:
            assert np.array_equal(predictor(rgb), plain(rgb)), combo

    import cv2

    big = cv2.resize(street_images[0], (144, 72))  # resized into the 128x64 test box: 64x128
    resized_plain = Predictor(str(exports[(False, False, None)]), backend="onnxruntime", test_scale=(128, 64))
    resized_baked = Predictor(str(exports[(True, False, None)]), backend="onnxruntime", test_scale=(128, 64))
    assert np.array_equal(resized_baked(big), resized_plain(big))
    with pytest.raises(ConfigError, match="both.onnx was exported with argmax=true"):
        Predictor(str(exports[(True, True, None)]), backend="onnxruntime", mode="slide")


def test_a_file_baked_in_place_keeps_its_own_answers(exports, street_images, tmp_path) -> None:
    """`bake_in_place`: how an INT8 file is baked after its gate; held to the file before baking."""
    import shutil

    from bisenet_pl.deploy.export.bake import bake_in_place

    path = tmp_path / "model.onnx"
    shutil.copy(exports[(False, False, None)], path)
    shutil.copy(sidecar_path(exports[(False, False, None)]), sidecar_path(path))
    before = OnnxNet(path)
    diffs = bake_in_place(path, GraphContract.from_options(True, True), SHAPES[:1])
    assert diffs == [0.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]
    net = adapt(OnnxNet(path))
    assert (
        isinstance(net, BakedNet)
        and json.loads(sidecar_path(path).read_text())["graph"]["output"] == "labels"
    )
    for rgb in street_images:
        assert np.array_equal(net.native(rgb[None])[0], before(preprocess(rgb, None)).argmax(1)[0].numpy())


@pytest.mark.slow
def test_export_onnx_int8_baked_end_to_end(run_cli, trained_run, tiny_data, tmp_path) -> None:
    """`export format=onnx-int8 preprocess=true argmax=true`: gated as any INT8 file, then baked."""
    out = tmp_path / "m.int8.onnx"
    extra = ("preprocess=true", "argmax=true", "check_shapes=[[1,3,64,128]]")
    proc = int8_export(run_cli, trained_run, tiny_data, tmp_path, "onnx-int8", out, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "INT8 vs fp32 on 3 val images" in proc.stdout
    assert "labels: 100.0000 % equal to the file before baking's argmax" in proc.stdout
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["precision"] == "int8" and meta["graph"]["input_dtype"] == "uint8"
    net = adapt(OnnxNet(out))
    assert isinstance(net, BakedNet) and net.native(np.zeros((1, 64, 128, 3), np.uint8)).shape == (1, 64, 128)
