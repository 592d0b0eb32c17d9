"""The README's "Train on your own data", run: check, train, fine-tune, evaluate and predict on synthetic
datasets stored in each supported layout, with the numbers they must give."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _shared import cli_env
from PIL import Image

from bisenet_pl.data.synthetic.exports import make_export
from bisenet_pl.data.synthetic.layouts import make_layout_dataset

#: A short CPU run of mmseg's recipe at the fixtures' size.
SHORT = [
    "data.batch_size=2",
    "data.num_workers=0",
    "data.scale=[128,64]",
    "data.crop_size=[64,64]",
    "data.test_scale=[128,64]",
    "module.inference.crop_size=[64,64]",
    "module.warmup_steps=5",
    "trainer.max_steps=60",
    "trainer.val_check_interval=60",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]
#: The annotation-tool layouts hold large coloured shapes (bisenet_pl.data.synthetic.exports): learnable
#: in 60 steps. Measured (60 steps, 3 seeds each): binary (photometric on) mIoU 88-89 vs the all-background
#: 35; the 3-class CVAT set without the photometric distortion 41-68 vs the majority's 21 (with it on,
#: the BN statistics of 60 steps stay too noisy for the eval).
TOOL = ["data.photometric=false"]
LAYOUTS = {  # layout -> (the data options a user gives, classes, margin over the majority baseline)
    "binary": (["data=folder"], 2, 20.0),
    "five": (["data=folder"], 5, 10.0),
    "ade20k": (["data=ade20k", "data.classes=[road,building,tree,sky,car]"], 5, 10.0),
    "camvid": (["data=camvid"], 11, 10.0),
    "cvat": (["data=cvat", *TOOL], 3, 10.0),
    "voc": (["data=voc", *TOOL], 21, 10.0),
    "colour": (["data=folder", *TOOL], 3, 10.0),
    "flat": (["data=folder", "data.val_fraction=0.3", *TOOL], 3, 10.0),
}
EXPORTS = ("binary", "cvat", "voc", "colour", "flat")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    return {
        name: (
            make_export(name, root / name, n_train=16, n_val=8, height=64, width=128)
            if name in EXPORTS
            else make_layout_dataset(name, root / name, n_train=12, n_val=4, height=64, width=128)
        )
        for name in LAYOUTS
    }


def _train(run_cli, tmp_path, *args):
    """One short run, one torch thread (`cli_env`'s): alone on this 2-core box a second thread saves
    nothing (19 against 20 s), beside the other xdist worker two OpenMP threads thrash (73-165 s)."""
    run = tmp_path / "run"
    proc = run_cli("bisenet_pl.train", *args, *SHORT, f"paths.root_dir={tmp_path}", f"hydra.run.dir={run}",
                   timeout=600, env=cli_env())  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return run, proc.stdout + proc.stderr


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_short_run_on_each_layout_learns(layout, datasets, run_cli, tmp_path):
    options, n_classes, margin = LAYOUTS[layout]
    before = sorted(p.as_posix() for p in datasets[layout].rglob("*"))
    run, out = _train(run_cli, tmp_path, *options, f"data.root={datasets[layout]}")
    results = json.loads((run / "results.json").read_text())["results"]
    assert len(results["per_class"]) == n_classes
    # clearly above a model that learned nothing: the majority class everywhere scores
    # mIoU = (its pixel share) / (classes present); predicting background everywhere gives exactly that
    cm = np.array(results["confusion_matrix"], dtype=np.float64)
    shares = cm.sum(1) / cm.sum()
    majority_miou = 100.0 * shares.max() / int((shares > 0).sum())
    assert results["mIoU"] > majority_miou + margin, (results["mIoU"], majority_miou)
    meta = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["bisenet_pl"]
    assert meta["model_config"]["num_classes"] == n_classes and len(meta["meta"]["palette"]) == n_classes
    assert sorted(p.as_posix() for p in datasets[layout].rglob("*")) == before  # the data folder only read
    if layout == "flat":  # the drawn split is recorded in the run folder, and evaluate draws the same one
        import yaml

        split = yaml.safe_load((run / "data_split.yaml").read_text())
        assert len(split["train"]) + len(split["val"]) == 24 and not set(split["train"]) & set(split["val"])
        proc = run_cli("bisenet_pl.evaluate", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", *options,
                       f"data.root={datasets[layout]}", "data.num_workers=0", "num_workers=0",
                       "test_scale=[128,64]", f"hydra.run.dir={tmp_path / 'ev'}")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        evaluated = json.loads((tmp_path / "ev" / "results.json").read_text())["results"]
        assert evaluated["mIoU"] == pytest.approx(results["mIoU"], abs=1e-6)


def test_batch_1_per_device_is_refused_before_training(datasets, run_cli, tmp_path):
    short = [a for a in SHORT if not a.startswith("data.batch_size=")]
    proc = run_cli("bisenet_pl.train", "data=cvat", f"data.root={datasets['cvat']}", *short,
                   "data.batch_size=1",
                   f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1 and "data.batch_size=1" in errors[0] and "at least 2 images per device" in errors[0]
    )
    assert "data.batch_size=2" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists() or not any(
        (tmp_path / "run" / "checkpoints").iterdir()
    )


def test_fine_tuning_a_binary_set_from_a_cityscapes_checkpoint(datasets, trained_run, run_cli, tmp_path):
    cityscapes = trained_run / "checkpoints" / "last.ckpt"
    run, out = _train(run_cli, tmp_path, "data=folder", f"data.root={datasets['binary']}",
                      f"model.init_from={cityscapes}")  # fmt: skip
    assert "loaded 375 of 385 tensors" in out
    assert "re-initialised (class count differs): 10: decode_head.conv_seg.weight" in out
    results = json.loads((run / "results.json").read_text())["results"]
    assert list(results["per_class"]) == ["background", "car"]  # the data's names, in every report
    ckpt = run / "checkpoints" / "last.ckpt"
    # evaluate on the same data gives the run's own test numbers (same weights, same inference)
    proc = run_cli("bisenet_pl.evaluate", f"ckpt={ckpt}", "data=folder", f"data.root={datasets['binary']}",
                   "data.num_workers=0", "num_workers=0", f"hydra.run.dir={tmp_path / 'ev'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((tmp_path / "ev" / "results.json").read_text())["results"]
    assert evaluated["mIoU"] == pytest.approx(results["mIoU"], abs=1e-6)
    # export: the ONNX file's sidecar carries the data's classes and palette, and it evaluates the same
    onnx = tmp_path / "binary.onnx"
    proc = run_cli("bisenet_pl.export", f"ckpt={ckpt}", f"out={onnx}", "exporter=torchscript",
                   "check_shapes=[[1,3,64,128]]", f"hydra.run.dir={tmp_path / 'ex'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    sidecar = json.loads(onnx.with_suffix(".onnx.json").read_text())
    assert sidecar["classes"] == ["background", "car"] and len(sidecar["palette"]) == 2
    proc = run_cli("bisenet_pl.evaluate", f"ckpt={onnx}", "backend=onnxruntime", "data=folder",
                   f"data.root={datasets['binary']}", "data.num_workers=0", "num_workers=0",
                   f"hydra.run.dir={tmp_path / 'ev2'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    onnx_results = json.loads((tmp_path / "ev2" / "results.json").read_text())["results"]
    assert onnx_results["mIoU"] == pytest.approx(results["mIoU"], abs=0.05)
    # predict: the dataset's palette and names come from the checkpoint, no label ids for it
    photos = datasets["binary"] / "images" / "val"
    proc = run_cli("bisenet_pl.predict", f"ckpt={ckpt}", f"input={photos}", f"output={tmp_path / 'p'}",
                   "outputs=[color,trainid]", f"hydra.run.dir={tmp_path / 'pr'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    masks = [np.array(Image.open(m)) for m in sorted((tmp_path / "p" / "trainid").rglob("*.png"))]
    assert len(masks) == 8
    # both classes, not a model that paints everything background
    assert set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist()) == {0, 1}
    assert results["per_class"]["car"]["IoU"] > 50.0
    proc = run_cli("bisenet_pl.predict", f"ckpt={ckpt}", f"input={photos}", f"output={tmp_path / 'q'}",
                   "outputs=[labelid]", f"hydra.run.dir={tmp_path / 'pr2'}")  # fmt: skip
    assert proc.returncode == 2 and "label ids" in proc.stderr and "Traceback" not in proc.stderr


def test_a_mask_value_outside_the_table_stops_training_before_the_model_is_built(datasets, run_cli, tmp_path):
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(datasets["five"], bad)
    first = sorted((bad / "masks" / "train").glob("*.png"))[0]
    Image.fromarray(np.full((64, 128), 9, np.uint8)).save(first)
    proc = run_cli(
        "bisenet_pl.train", "data=folder", f"data.root={bad}", *SHORT, f"paths.root_dir={tmp_path}"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "mask values [9]" in proc.stderr and "python -m bisenet_pl.data.check" in proc.stderr
