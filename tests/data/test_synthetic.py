"""The synthetic dataset: Cityscapes' layout, names and label encodings, consistent files, determinism."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bisenet_pl.data.cityscapes import LABEL_ID_TO_TRAIN_ID, LABELS, NAME_TO_LABEL, SYNTHETIC_MARKER
from bisenet_pl.data.synthetic import CITIES, ensure_dataset, make_synthetic_cityscapes
from bisenet_pl.data.synthetic.__main__ import main

SMALL = {"n_train": 6, "n_val": 3, "n_test": 2, "height": 128, "width": 256, "seed": 0}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_synthetic_cityscapes(tmp_path_factory.mktemp("synthetic") / "cs", **SMALL)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def digest(root: Path) -> dict[str, str]:
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files(root)}


def test_layout_and_names_are_cityscapes(root):
    images = sorted((root / "leftImg8bit").rglob("*.png"))
    assert len(images) == 6 + 3 + 2
    first = root / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    assert first in images
    stem = "aachen_000000_000019"
    gt = root / "gtFine" / "train" / "aachen"
    for suffix in ("labelIds.png", "instanceIds.png", "color.png", "polygons.json"):
        assert (gt / f"{stem}_gtFine_{suffix}").is_file()
    # splits use disjoint cities, like Cityscapes; test has images but no labels
    cities = {s: {p.name for p in (root / "leftImg8bit" / s).iterdir()} for s in ("train", "val", "test")}
    assert cities["val"] <= set(CITIES["val"]) and cities["train"] <= set(CITIES["train"])
    assert not (cities["train"] & cities["val"]) and not (cities["val"] & cities["test"])
    assert not (root / "gtFine" / "test").exists()
    image = Image.open(first)
    assert image.mode == "RGB" and image.size == (256, 128)
    assert json.loads((root / SYNTHETIC_MARKER).read_text())["n_train"] == 6


def rasterise(polygons: dict, value) -> np.ndarray:
    """json2labelImg's rule (docs/reproduction.md#data), written independently: PIL polygons in file order on
    'unlabeled',
    license plates (id < 0) skipped."""
    img = Image.new("L", (polygons["imgWidth"], polygons["imgHeight"]), 0)
    draw = ImageDraw.Draw(img)
    for obj in polygons["objects"]:
        label = NAME_TO_LABEL[obj["label"]]
        if label.id >= 0:
            draw.polygon([tuple(p) for p in obj["polygon"]], fill=value(label))
    return np.asarray(img)


def label_files(root: Path, split: str = "train"):
    for path in sorted((root / "gtFine" / split).rglob("*_gtFine_labelIds.png")):
        stem = str(path)[: -len("labelIds.png")]
        yield path, Path(stem + "instanceIds.png"), Path(stem + "color.png"), Path(stem + "polygons.json")


def test_label_maps_are_rasterised_from_the_polygons(root):
    for label_path, _, color_path, json_path in label_files(root):
        polygons = json.loads(json_path.read_text())
        assert (polygons["imgHeight"], polygons["imgWidth"]) == (128, 256)
        label_ids = np.asarray(Image.open(label_path))
        assert label_ids.dtype == np.uint8
        assert np.array_equal(label_ids, rasterise(polygons, lambda label: label.id))
        # colour: the official colour of every pixel's label
        colors = np.asarray(Image.open(color_path))
        lut = np.zeros((256, 3), np.uint8)
        for label in LABELS:
            if label.id >= 0:
                lut[label.id] = label.color
        assert colors.shape == (128, 256, 4)
        assert np.array_equal(colors[..., :3], lut[label_ids])


def test_instance_ids_encode_label_times_1000_plus_instance(root):
    instance_classes = {label.id for label in LABELS if label.has_instances}
    seen_instances = 0
    for label_path, inst_path, _, json_path in label_files(root):
        label_ids = np.asarray(Image.open(label_path)).astype(np.int64)
        inst = np.asarray(Image.open(inst_path))
        assert inst.dtype == np.uint16  # 16-bit PNG, like the real files
        inst = inst.astype(np.int64)
        is_instance = np.isin(label_ids, list(instance_classes))
        assert np.array_equal(inst[is_instance] // 1000, label_ids[is_instance])
        assert np.array_equal(inst[~is_instance], label_ids[~is_instance])
        # instance numbers count up per label from 0, in file order
        cars = [o for o in json.loads(json_path.read_text())["objects"] if o["label"] == "car"]
        present = set(np.unique(inst[label_ids == 26]).tolist())
        assert present <= {26000 + k for k in range(len(cars))}
        seen_instances += len(present)
    assert seen_instances > 0


def test_labels_hold_cityscapes_ids_including_ignored_ones(root):
    all_ids = set()
    for label_path, *_ in label_files(root):
        all_ids |= set(np.unique(np.asarray(Image.open(label_path))).tolist())
    assert all_ids <= set(range(34))
    ignored = all_ids & {0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30}
    assert len(ignored) >= 3  # e.g. ego vehicle, rail track, parking: they map to 255
    assert (LABEL_ID_TO_TRAIN_ID[sorted(ignored)] == 255).all()
    # license plates are in the json but never drawn (docs/reproduction.md#data)
    names = {o["label"] for _, _, _, j in label_files(root) for o in json.loads(j.read_text())["objects"]}
    assert "license plate" in names


def test_every_train_class_occurs_in_train_and_val(root):
    for split in ("train", "val"):
        train_ids = set()
        for label_path, *_ in label_files(root, split):
            train_ids |= set(np.unique(LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(label_path))]).tolist())
        assert set(range(19)) <= train_ids, f"{split}: missing {set(range(19)) - train_ids}"


def test_images_have_texture_and_classes_differ_in_colour(root):
    image = np.asarray(Image.open(next((root / "leftImg8bit" / "train").rglob("*.png")))).astype(float)
    label_path = next(label_files(root))[0]
    train_ids = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(label_path))]
    sky, road = image[train_ids == 10], image[train_ids == 0]
    assert sky.std(axis=0).mean() > 2 and road.std(axis=0).mean() > 2  # not flat fills
    assert sky[:, 2].mean() > sky[:, 0].mean() + 20  # sky is blue...
    assert abs(road[:, 0].mean() - road[:, 2].mean()) < 40  # ... road is greyish


def test_same_arguments_give_byte_identical_files(root, tmp_path):
    again = make_synthetic_cityscapes(tmp_path / "again", **SMALL)
    assert digest(again) == digest(root)
    other = make_synthetic_cityscapes(tmp_path / "other", **{**SMALL, "seed": 1, "n_val": 0, "n_test": 0})
    a = (root / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png").read_bytes()
    b = (other / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png").read_bytes()
    assert a != b


def test_full_resolution_on_request(tmp_path):
    root = make_synthetic_cityscapes(tmp_path / "big", n_train=0, n_val=1, n_test=0, height=1024, width=2048)
    (path,) = (root / "leftImg8bit" / "val").rglob("*.png")
    assert Image.open(path).size == (2048, 1024)


def test_cli_writes_the_dataset_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [str(out), "--train", "2", "--val", "1", "--test", "0", "--height", "64", "--width", "128"]
    assert main(args) == 0
    assert "Wrote a synthetic Cityscapes-layout dataset" in capsys.readouterr().out
    assert len(list((out / "leftImg8bit").rglob("*.png"))) == 3
    assert main([str(out)]) == 1
    assert "already holds a dataset" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kind", "said", "images", "masks"),
    [
        (["--export", "cvat"], "in a cvat export", "JPEGImages", "SegmentationClass"),
        (["--layout", "camvid"], "in the camvid layout", "train", "trainannot"),
    ],
)
def test_cli_writes_other_layouts_and_tool_exports(tmp_path, capsys, kind, said, images, masks):
    out = tmp_path / "set"
    assert main([str(out), *kind, "--train", "3", "--val", "2", "--height", "32", "--width", "48"]) == 0
    assert said in capsys.readouterr().out
    stored = sorted(p.stem for p in (out / images).iterdir())
    assert len(stored) in (3, 5)  # CamVid's train/ holds the train split, CVAT's JPEGImages/ all of them
    assert {p.stem for p in (out / masks).iterdir()} == set(stored)


def test_ensure_dataset_generates_once_with_one_log_line(tmp_path, caplog):
    root = tmp_path / "data" / "synthetic_cityscapes"
    with caplog.at_level(logging.INFO, logger="bisenet_pl.data.synthetic.writer"):
        assert ensure_dataset(root, n_train=2, n_val=1, n_test=1, height=64, width=128) == root
    lines = [r for r in caplog.records if r.name == "bisenet_pl.data.synthetic.writer"]
    assert len(lines) == 1 and "generating a synthetic" in lines[0].getMessage()
    before = digest(root)
    assert sorted(p.name for p in root.iterdir()) == ["gtFine", "leftImg8bit", SYNTHETIC_MARKER]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bisenet_pl.data.synthetic.writer"):
        ensure_dataset(root, n_train=5)  # a dataset is there: nothing happens
    assert not caplog.records
    assert digest(root) == before


def _ensure(root: str) -> None:
    ensure_dataset(root, n_train=3, n_val=1, n_test=0, height=64, width=128)


def test_ensure_dataset_is_safe_for_concurrent_ranks(tmp_path):
    root = tmp_path / "shared"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_ensure, args=(str(root),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(p.name for p in root.iterdir()) == ["gtFine", "leftImg8bit", SYNTHETIC_MARKER]
    assert len(list((root / "leftImg8bit").rglob("*.png"))) == 4
    assert len(list((root / "gtFine").rglob("*_labelIds.png"))) == 4
