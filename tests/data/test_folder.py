"""`data=folder` and its presets: pairing, label encodings, and the data checker's findings.

The datasets are the synthetic scenes written in each supported layout
(`bisenet_pl.data.synthetic.layouts`): 0/255 binary masks, five classes with an ignore value, ADE20K's
`reduce_zero_label`, CamVid as the SegNet tutorial ships it.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bisenet_pl.data.check import check_split, main
from bisenet_pl.data.folder import LabelEncoding
from bisenet_pl.data.folder_datamodule import FolderDataModule
from bisenet_pl.data.presets import ADE20K_CLASSES, CAMVID_CLASSES
from bisenet_pl.data.synthetic.layouts import make_layout_dataset
from bisenet_pl.errors import DatasetError


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {
        name: make_layout_dataset(name, root / name, n_train=6, n_val=3, height=64, width=128)
        for name in ("binary", "five", "ade20k", "camvid")
    }


@pytest.mark.parametrize(
    ("layout", "preset", "classes", "values"),
    [
        ("binary", "folder", ("background", "road"), {0, 1}),
        ("five", "folder", ("flat", "construction", "nature", "sky", "object"), {0, 1, 2, 3, 4, 255}),
        ("ade20k", "ade20k", ADE20K_CLASSES, None),
        ("camvid", "camvid", CAMVID_CLASSES, set(range(11)) | {255}),
    ],
)
def test_each_layout_pairs_and_decodes(layouts, layout, preset, classes, values):
    module = FolderDataModule(layouts[layout], preset=preset)
    assert module.class_names == tuple(classes) and module.num_classes == len(classes)
    for split, n in (("train", 6), ("val", 3)):
        pairs, orphans = module.pairs(split)
        assert len(pairs) == n and orphans == []
        assert all(p.mask is not None and p.mask.stem == p.image.stem for p in pairs)
    dataset = module.make_dataset("val", None, keep_original=False, with_labels=True)
    labels = np.concatenate([dataset[i]["label"].numpy().ravel() for i in range(len(dataset))])
    if values is not None:
        assert set(np.unique(labels).tolist()) <= values
    else:  # ADE20K: stored 0 ("other") -> ignore, stored 1..5 -> classes 0..4
        assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3, 4, 255} and 255 in labels


def test_label_encodings_follow_mmseg_and_refuse_unknown_values(tmp_path):
    binary = LabelEncoding(num_classes=2, label_map={0: 0, 255: 1})
    assert binary.decode(np.array([[0, 255]], np.uint8), "m.png").tolist() == [[0, 1]]
    ade = LabelEncoding(num_classes=150, reduce_zero_label=True)
    assert ade.decode(np.array([[0, 1, 150, 255]], np.uint8), "a.png").tolist() == [[255, 0, 149, 255]]
    plain = LabelEncoding(num_classes=2)
    with pytest.raises(DatasetError, match=r"m\.png: mask values \[7\].*label_map=\{0: 0, 255: 1\}"):
        plain.decode(np.array([[0, 7]], np.uint8), "m.png")
    with pytest.raises(DatasetError, match="reduce_zero_label=true"):
        LabelEncoding(num_classes=3).decode(np.array([[1, 2, 3]], np.uint8), "z.png")


def _planted(layouts, tmp_path):
    """The binary set with one fault of each kind planted in its train split."""
    import shutil

    root = tmp_path / "faulty"
    shutil.copytree(layouts["binary"], root)
    masks, images = root / "masks" / "train", root / "images" / "train"
    (masks / "train_0000.png").unlink()  # an image without its mask
    Image.fromarray(np.full((64, 128), 7, np.uint8)).save(masks / "train_0001.png")  # an unknown value
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(masks / "train_0002.png")  # a size mismatch
    (images / "train_0003.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")  # a corrupt file
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(masks / "stray.png")  # a mask without an image
    return root


def test_the_checker_finds_every_planted_fault(layouts, tmp_path, capsys):
    root = _planted(layouts, tmp_path)
    report = check_split(FolderDataModule(root), "train", workers=2)
    assert report.images == 6
    assert [p.rsplit("/", 1)[-1] for p in report.without_mask] == ["train_0000.jpg"]
    assert report.masks_without_image[0].endswith("stray.png")
    assert len(report.size_mismatch) == 1 and "train_0002.png" in report.size_mismatch[0]
    assert len(report.unreadable) == 1 and "train_0003.jpg" in report.unreadable[0]
    assert report.unknown == [7] and "label_map" in report.hints[0]
    assert int(report.values[7]) == 64 * 128
    assert main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "UNKNOWN" in out and "problem(s) to fix before training" in out


def test_the_checker_flags_0_255_masks_without_a_label_map(layouts, capsys):
    root = layouts["binary"]
    assert main([str(root)]) == 0  # its classes.yaml maps 255 -> 1
    assert main([str(root), "data.label_map={}"]) == 1
    assert "add data.label_map={0: 0, 255: 1}" in capsys.readouterr().out.replace("\n", " ")
    assert main([str(root), "data.colour=1"]) == 2  # a typo in a key: one message
    assert "data.colour is not a key" in capsys.readouterr().err
