"""`bisenet_pl.Predictor` and `python -m bisenet_pl.predict`: masks a user can look at and submit."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bisenet_pl.data.cityscapes import PALETTE, TRAIN_ID_TO_LABEL_ID


@pytest.fixture(scope="module")
def segmenter(trained_run):
    import bisenet_pl

    return bisenet_pl.Predictor(trained_run / "checkpoints" / "last.ckpt", device="cpu")


def test_segmenter_returns_a_train_id_map_at_the_image_size(segmenter, tiny_data):
    path = sorted((tiny_data / "leftImg8bit" / "val").rglob("*.png"))[0]
    mask = segmenter(path)
    assert mask.shape == (64, 128) and mask.dtype == np.uint8 and mask.max() < 19
    rgb = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(segmenter(rgb), mask)  # array and path give the same answer
    odd = np.ascontiguousarray(rgb[:61, :97])  # any size, not a multiple of 32
    assert segmenter(odd).shape == (61, 97)
    colour = segmenter.colorize(mask)
    assert colour.shape == (64, 128, 3)
    ids, idx = np.unique(mask, return_index=True)
    for i, flat in zip(ids, idx, strict=True):
        assert tuple(colour.reshape(-1, 3)[flat]) == PALETTE[i]


def test_segmenter_uses_the_checkpoint_test_scale(segmenter):
    assert segmenter.test_scale == (128, 64)
    assert segmenter.class_names[0] == "road" and len(segmenter.class_names) == 19


def test_predict_cli_writes_every_output_and_survives_a_corrupt_image(
    run_cli, trained_run, tiny_data, tmp_path
):
    inputs = tmp_path / "in"
    for src in sorted((tiny_data / "leftImg8bit" / "test").rglob("*.png")):
        shutil.copy(src, inputs / src.name) if inputs.exists() else (inputs.mkdir(), shutil.copy(src, inputs))
    (inputs / "broken_000000_000000_leftImg8bit.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    proc = run_cli(
        "bisenet_pl.predict",
        f"ckpt={trained_run / 'checkpoints' / 'last.ckpt'}",
        f"input={inputs}",
        f"output={out}",
        "outputs=[color,overlay,trainid,labelid]",
        "opacity=0.4",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 1  # something failed, and it says what
    assert "broken_000000_000000_leftImg8bit.png" in proc.stderr and "Traceback" not in proc.stderr
    assert "2 of 3 images written" in proc.stdout
    names = sorted(p.name for p in (out / "labelid").iterdir())
    assert len(names) == 2 and all(re.fullmatch(r"[a-z]+_\d{6}_\d{6}\.png", n) for n in names)
    for kind in ("color", "overlay", "trainid"):
        assert sorted(p.name for p in (out / kind).iterdir()) == names
    trainid = np.asarray(Image.open(out / "trainid" / names[0]))
    labelid = np.asarray(Image.open(out / "labelid" / names[0]))
    assert trainid.shape == (64, 128) and trainid.max() < 19
    assert np.array_equal(labelid, TRAIN_ID_TO_LABEL_ID[trainid])  # ids the test server expects
    colour = np.asarray(Image.open(out / "color" / names[0]))
    overlay = np.asarray(Image.open(out / "overlay" / names[0]))
    assert colour.shape == overlay.shape == (64, 128, 3) and not np.array_equal(colour, overlay)


def test_predict_accepts_a_glob_and_a_single_file(run_cli, trained_run, tiny_data, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    pattern = str(tiny_data / "leftImg8bit" / "val" / "*" / "*.png")
    proc = run_cli("bisenet_pl.predict", f"ckpt={ckpt}", f"input='{pattern}'", f"output={tmp_path / 'g'}",
                   f"hydra.run.dir={tmp_path / 'r1'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the sub-folders below the glob's wildcard are kept: <city>/<frame>.png
    written = sorted(
        p.relative_to(tmp_path / "g" / "color") for p in (tmp_path / "g" / "color").rglob("*.png")
    )
    assert len(written) == 3 and all(len(p.parts) == 2 for p in written)
    one = next(Path(p) for p in sorted((tiny_data / "leftImg8bit" / "val").rglob("*.png")))
    proc = run_cli("bisenet_pl.predict", f"ckpt={ckpt}", f"input={one}", f"output={tmp_path / 's'}",
                   "outputs=[trainid]", f"hydra.run.dir={tmp_path / 'r2'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in (tmp_path / "s" / "trainid").iterdir()] == [one.name.replace("_leftImg8bit", "")]


def test_predict_rejects_an_unknown_output_kind(run_cli, trained_run, tiny_data, tmp_path):
    proc = run_cli("bisenet_pl.predict", f"ckpt={trained_run / 'checkpoints' / 'last.ckpt'}",
                   f"input={tiny_data}", "outputs=[colour]")  # fmt: skip
    assert proc.returncode == 2 and "colour" in proc.stderr and "Traceback" not in proc.stderr


def test_inputs_that_would_share_an_output_file_keep_their_folders_or_are_refused(tmp_path):
    from bisenet_pl.errors import DatasetError
    from bisenet_pl.inference.batch import find_images

    for city in ("a", "b"):
        (tmp_path / "in" / city).mkdir(parents=True)
        (tmp_path / "in" / city / "img.png").write_bytes(b"")
    found = find_images(str(tmp_path / "in" / "*" / "img.png"))
    assert [str(rel) for _, rel in found] == ["a/img.png", "b/img.png"]  # two outputs, not one twice
    (tmp_path / "in" / "a" / "img.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="1 output name.* written twice: .*img.jpg and .*img.png"):
        find_images(tmp_path / "in")
