"""CityscapesDataset: pairing, the item contract, labelIds -> trainIds, and readable errors on bad input."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from bisenet_pl.data.cityscapes import (
    LABEL_ID_TO_TRAIN_ID,
    SYNTHETIC_MARKER,
    CityscapesDataset,
    train_ids_to_label_ids,
)
from bisenet_pl.data.synthetic import make_synthetic_cityscapes
from bisenet_pl.data.transforms import build_test_transform, build_train_transform
from bisenet_pl.errors import DatasetError
from bisenet_pl.inference.visualize import colorize


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "cs"
    return make_synthetic_cityscapes(root, n_train=3, n_val=2, n_test=2, height=64, width=128, seed=0)


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    """A private copy that a test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "cs"))


def first_pair(root: Path, split: str = "val") -> tuple[Path, Path]:
    image = sorted((root / "leftImg8bit" / split).rglob("*_leftImg8bit.png"))[0]
    stem = image.name[: -len("_leftImg8bit.png")]
    return image, root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"


def test_item_contract(pristine):
    ds = CityscapesDataset(pristine, "val")
    assert len(ds) == 2
    item = ds[0]
    image_path, label_path = first_pair(pristine)
    assert item["name"] == image_path.name[: -len("_leftImg8bit.png")]  # e.g. frankfurt_000000_000019
    assert item["name"].startswith("frankfurt_")
    assert item["image_path"] == str(image_path)
    assert item["ori_size"] == (64, 128)
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 64, 128)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (64, 128)
    # the label is the labelIds file mapped through the lookup table
    expected = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(label_path))]
    assert np.array_equal(item["label"].numpy(), expected)
    assert set(np.unique(item["label"].numpy())) <= set(range(19)) | {255}
    # without a transform: RGB normalised with mmseg's statistics
    bgr = cv2.imread(str(image_path))
    r = (bgr[10, 20, 2] - 123.675) / 58.395
    assert item["image"][0, 10, 20].item() == pytest.approx(r, rel=1e-5)


def test_sorted_by_path_and_default_collate_works(pristine):
    ds = CityscapesDataset(pristine, "train", transform=build_test_transform((128, 64)))
    paths = [s.image for s in ds.samples]
    assert paths == sorted(paths)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=1)))
    assert batch["image"].shape == (1, 3, 64, 128) and batch["label"].shape == (1, 64, 128)
    crops = build_train_transform((128, 64), crop_size=(32, 32))
    train = CityscapesDataset(pristine, "train", transform=crops)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=3)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["label"].shape == (3, 32, 32)


def test_test_transform_keeps_label_at_original_resolution(pristine):
    ds = CityscapesDataset(pristine, "val", transform=build_test_transform((256, 128)))
    item = ds[0]
    assert item["image"].shape == (3, 128, 256)
    assert item["label"].shape == (64, 128) and item["ori_size"] == (64, 128)


def test_label_train_ids_file_is_preferred(root):
    image, label_ids = first_pair(root)
    train_ids = Path(str(label_ids).replace("_labelIds.png", "_labelTrainIds.png"))
    Image.fromarray(np.full((64, 128), 5, np.uint8)).save(train_ids)
    assert (CityscapesDataset(root, "val")[0]["label"] == 5).all()


def test_test_split_serves_images_without_labels(pristine):
    ds = CityscapesDataset(pristine, "test")
    assert "label" not in ds[0] and ds[0]["image"].shape == (3, 64, 128)
    assert "label" not in CityscapesDataset(pristine, "val", with_labels=False)[0]


def test_size_is_logged_and_a_short_real_looking_split_warns(root, caplog):
    with caplog.at_level(logging.INFO, logger="bisenet_pl.data.cityscapes"):
        CityscapesDataset(root, "val")
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "Synthetic" in caplog.records[0].getMessage()
    (root / SYNTHETIC_MARKER).unlink()  # now it looks like (an incomplete) real Cityscapes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bisenet_pl.data.cityscapes"):
        CityscapesDataset(root, "val")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "2 images" in record.getMessage() and "500" in record.getMessage()


def test_colorize_and_label_id_conversion():
    ids = np.array([[0, 10, 18, 255]], np.uint8)
    assert colorize(ids).tolist() == [[[128, 64, 128], [70, 130, 180], [119, 11, 32], [0, 0, 0]]]
    assert train_ids_to_label_ids(ids).tolist() == [[7, 23, 33, 0]]
    assert train_ids_to_label_ids(np.arange(19)).tolist() == [
        7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
    ]  # fmt: skip
    assert colorize(torch.tensor([[13]]).numpy()).tolist() == [[[0, 0, 142]]]  # int64 input


# ---------------------------------------------------------------------------------------------------
# Bad input: one readable DatasetError naming the file and what to do
# ---------------------------------------------------------------------------------------------------


def test_missing_root_says_how_to_get_data(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as err:
        CityscapesDataset(tmp_path / "nowhere", "train")
    assert "python -m bisenet_pl.data.synthetic" in str(err.value)
    assert str(tmp_path / "nowhere") in str(err.value)


def test_missing_and_empty_split(root):
    with pytest.raises(DatasetError, match=r"No split 'trian'.*\['test', 'train', 'val'\]"):
        CityscapesDataset(root, "trian")
    for p in (root / "leftImg8bit" / "val").rglob("*.png"):
        p.unlink()
    with pytest.raises(DatasetError, match="Split 'val' is empty.*_leftImg8bit.png"):
        CityscapesDataset(root, "val")


def test_image_without_label_names_both_paths(root):
    image, label = first_pair(root)
    label.unlink()
    with pytest.raises(DatasetError) as err:
        CityscapesDataset(root, "val")
    message = str(err.value)
    assert str(image) in message and str(label) in message and "ignore_missing_labels" in message
    ds = CityscapesDataset(root, "val", ignore_missing_labels=True)
    assert "label" not in ds[0] and "label" in ds[1]


def test_corrupt_and_truncated_files_are_named(root):
    image, label = first_pair(root)
    image.write_bytes(b"not a png")
    ds = CityscapesDataset(root, "val")  # construction does not decode
    with pytest.raises(DatasetError, match="Cannot decode image .*" + image.name):
        ds[0]
    shutil.copy(sorted((root / "leftImg8bit" / "train").rglob("*.png"))[0], image)  # a valid image again
    data = label.read_bytes()
    label.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="Cannot decode label .*" + label.name):
        ds[0]


def test_label_with_ids_outside_the_table(root):
    _, label = first_pair(root)
    bad = np.asarray(Image.open(label)).copy()
    bad[0, :3] = [34, 77, 200]
    Image.fromarray(bad).save(label)
    with pytest.raises(DatasetError, match=r"holds ids \[34, 77, 200\] outside") as err:
        CityscapesDataset(root, "val")[0]
    assert label.name in str(err.value)
    train_ids = Path(str(label).replace("_labelIds.png", "_labelTrainIds.png"))
    Image.fromarray(np.full((64, 128), 19, np.uint8)).save(train_ids)  # trainIds stop at 18
    with pytest.raises(DatasetError, match=r"holds ids \[19\].*0\.\.18 and 255"):
        CityscapesDataset(root, "val")[0]


def test_rgb_label_and_size_mismatch(root):
    image, label = first_pair(root)
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(label)
    with pytest.raises(DatasetError, match="single-channel 8-bit"):
        CityscapesDataset(root, "val")[0]
    Image.fromarray(np.zeros((32, 128), np.uint8)).save(label)
    with pytest.raises(DatasetError, match=r"is 64x128 but its label .* is 32x128"):
        CityscapesDataset(root, "val")[0]
