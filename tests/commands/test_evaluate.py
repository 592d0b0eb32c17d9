"""`python -m bisenet_pl.evaluate`: the number training reports, every mode, and Cityscapes' own tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

EVAL_DATA = "data.root={d} data.synthetic_root={d}"


def _eval_args(ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"ckpt={ckpt}",
        *EVAL_DATA.format(d=data).split(),
        f"hydra.run.dir={out}",
        "num_workers=0",
        *extra,
    ]


def test_evaluate_reproduces_the_training_test_number(run_cli, trained_run, tiny_data, tmp_path):
    """One inference path: evaluate on the final checkpoint gives exactly the mIoU `train` reported."""
    proc = run_cli(
        "bisenet_pl.evaluate", *_eval_args(trained_run / "checkpoints" / "last.ckpt", tiny_data, tmp_path)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads((tmp_path / "results.json").read_text())
    train = json.loads((trained_run / "results.json").read_text())
    assert ours["results"]["mIoU"] == pytest.approx(train["results"]["mIoU"], abs=1e-9)
    assert ours["results"]["confusion_matrix"] == train["results"]["confusion_matrix"]
    assert ours["images"] == 3 and ours["mode"] == "whole" and ours["test_scale"] == [128, 64]
    assert "mIoU" in proc.stdout and "road" in proc.stdout  # the per-class table is printed


def test_modes_and_the_official_cityscapes_evaluation(run_cli, trained_run, tiny_data, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    results = {}
    for mode, extra in (
        ("whole", ["official=true"]),
        ("slide", ["inference.crop_size=[256,256]"]),  # one window covers the 64x128 image
        ("msflip", []),
    ):
        out = tmp_path / mode
        proc = run_cli("bisenet_pl.evaluate", *_eval_args(ckpt, tiny_data, out, f"mode={mode}", *extra))
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[mode] = json.loads((out / "results.json").read_text())
    whole = results["whole"]
    # cityscapesscripts on label-id PNGs agrees with our confusion-matrix mIoU
    assert whole["official"]["mIoU"] == pytest.approx(whole["results"]["mIoU"], abs=1e-2)
    assert abs(whole["official"]["mIoU"] - whole["results"]["mIoU"]) / 100 < 1e-4
    preds = sorted((tmp_path / "whole" / "official_predictions").rglob("*_pred_labelIds.png"))
    assert len(preds) == 3
    # slide with a single window is whole
    assert results["slide"]["results"]["confusion_matrix"] == whole["results"]["confusion_matrix"]
    # ms+flip: 6 ratios x flip recorded, and the numbers are ms+flip's: the Python API's ms+flip masks of
    # the same images give the same confusion matrix, which is not whole's
    ms = results["msflip"]
    assert ms["inference"]["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and ms["inference"]["flip"] is True
    from bisenet_pl.data.cityscapes import find_samples, load_label
    from bisenet_pl.evaluation.metrics import SegmentationMetric
    from bisenet_pl.inference.predictor import Predictor

    predictor = Predictor(ckpt, device="cpu", mode="msflip")
    metric = SegmentationMetric()
    for sample in find_samples(tiny_data, "val"):
        pred = torch.from_numpy(predictor(sample.image)).long()
        metric.update(pred[None], torch.from_numpy(load_label(sample)).long()[None])
    assert metric.compute()["confusion_matrix"].tolist() == ms["results"]["confusion_matrix"]
    assert ms["results"]["confusion_matrix"] != whole["results"]["confusion_matrix"]


def test_an_mmseg_checkpoint_evaluates_like_ours(run_cli, trained_run, tiny_data, tmp_path):
    """A released-style mmseg .pth (auxiliary_head.*, `module.` prefix, meta + optimizer) is converted on
    the fly and gives the same numbers as our checkpoint of the same weights."""
    raw = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    sd = {
        "module." + k[len("model.") :].replace("aux_heads.", "auxiliary_head."): v
        for k, v in raw["state_dict"].items()
        if k.startswith("model.")
    }
    pth = tmp_path / "bisenetv2_mmseg.pth"
    torch.save({"meta": {"CLASSES": None}, "state_dict": sd, "optimizer": {}}, pth)
    out = tmp_path / "eval"
    proc = run_cli("bisenet_pl.evaluate", *_eval_args(pth, tiny_data, out, "test_scale=[128,64]"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads((out / "results.json").read_text())
    train = json.loads((trained_run / "results.json").read_text())
    assert ours["results"]["confusion_matrix"] == train["results"]["confusion_matrix"]


def test_bad_checkpoint_is_one_readable_message(run_cli, tiny_data, tmp_path):
    bogus = tmp_path / "model.ckpt"
    bogus.write_bytes(b"\x89PNG\r\n\x1a\n not a checkpoint")
    for ckpt in (tmp_path / "missing.ckpt", bogus):
        # no hydra.run.dir: the default run folder under outputs/evaluate/runs/ of the launch folder
        args = [a for a in _eval_args(ckpt, tiny_data, tmp_path) if not a.startswith("hydra.run.dir")]
        proc = run_cli("bisenet_pl.evaluate", *args)
        assert proc.returncode == 2
        assert str(ckpt.name) in proc.stderr and "Traceback" not in proc.stderr
    assert len(list((tmp_path / "outputs" / "evaluate" / "runs").iterdir())) == 2


def test_unlabelled_split_points_to_predict(run_cli, trained_run, tiny_data, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    proc = run_cli("bisenet_pl.evaluate", *_eval_args(ckpt, tiny_data, tmp_path / "e", "split=test"))
    assert proc.returncode == 2
    assert "predict" in proc.stderr and "Traceback" not in proc.stderr
