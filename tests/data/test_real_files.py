"""Data as it really comes: annotation-tool exports, colour masks, and broken files the checker must name.

Each case is built here in its exact layout: CVAT's "Segmentation mask 1.1" export, Pascal VOC 2012, a
folder of colour masks with a colour table, a folder without split sub-folders; and each broken file as a
camera, a Mac or an interrupted copy leaves it (a truncated JPEG or PNG, EXIF orientation 6 on a square
and a non-square photo, `._` resource forks, `.DS_Store`, an unknown grey value, an unknown colour).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bisenet_pl.data.check import check_split, main
from bisenet_pl.data.folder_datamodule import FolderDataModule
from bisenet_pl.data.limits import check_trainable
from bisenet_pl.data.presets import VOC_CLASSES
from bisenet_pl.data.strict import is_skipped, load_image, strict_decode
from bisenet_pl.data.synthetic.exports import MASK_COLOURS, SHAPE_CLASSES, make_export
from bisenet_pl.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {
        name: make_export(name, root / name, n_train=6, n_val=3, objects=4)
        for name in ("cvat", "voc", "colour", "flat")
    }


def _snapshot(root: Path) -> dict[str, str]:
    """Every file below root with its content hash: the checker and training must leave it unchanged."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _labels(module: FolderDataModule, split: str) -> np.ndarray:
    dataset = module.make_dataset(split, None, keep_original=False, with_labels=True)
    return np.concatenate([dataset[i]["label"].numpy().ravel() for i in range(len(dataset))])


# ---- layouts ------------------------------------------------------------------------------------------


def test_cvat_export_reads_labelmap_and_colour_masks(exports):
    root = exports["cvat"]
    assert (root / "labelmap.txt").is_file() and (root / "ImageSets" / "Segmentation" / "train.txt").is_file()
    assert Image.open(next((root / "SegmentationClass").glob("*.png"))).mode == "RGB"
    module = FolderDataModule(root, preset="cvat")
    assert module.class_names == SHAPE_CLASSES
    assert module.palette == [list(MASK_COLOURS[n]) for n in SHAPE_CLASSES]
    assert [len(module.pairs(s)[0]) for s in ("train", "val")] == [6, 3]
    labels = _labels(module, "train")
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3, 4}  # every colour became its class
    assert main(["data=cvat", f"data.root={root}"]) == 0


def test_voc_layout_reads_palette_indices_with_the_255_border(exports):
    root = exports["voc"]
    assert Image.open(next((root / "SegmentationClass").glob("*.png"))).mode == "P"
    module = FolderDataModule(root, preset="voc")
    assert module.class_names == VOC_CLASSES and module.num_classes == 21 and module.ignore_index == 255
    assert module.palette[15] == [192, 128, 128]  # VOC's person colour
    labels = _labels(module, "val")
    assert 255 in labels and set(np.unique(labels).tolist()) <= {0, 4, 7, 12, 15, 255}
    assert main(["data=voc", f"data.root={root}"]) == 0


def test_a_colour_mask_maps_through_its_table_and_is_refused_without_one(exports, tmp_path, capsys):
    root = exports["colour"]
    module = FolderDataModule(root)
    labels = _labels(module, "train")
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3, 4}
    bare = tmp_path / "bare"
    shutil.copytree(root, bare)
    (bare / "classes.yaml").write_text(yaml.safe_dump({"classes": list(SHAPE_CLASSES)}))
    with pytest.raises(DatasetError, match=r"train_0000\.png is a colour \(RGB\) image.*palette"):
        _labels(FolderDataModule(bare), "train")
    assert main([str(bare)]) == 1
    out = capsys.readouterr().out
    assert "train_0000.png is a colour (RGB) image" in out


def test_a_folder_without_splits_is_split_by_val_fraction_the_same_way_every_time(exports):
    root = exports["flat"]
    assert not (root / "images" / "train").exists()
    first = FolderDataModule(root, val_fraction=0.3)
    again = FolderDataModule(root, val_fraction=0.3)
    train, val = first.pairs("train")[0], first.pairs("val")[0]
    assert len(train) + len(val) == 9 and len(val) >= 1 and len(train) >= 1
    assert not {p.image for p in train} & {p.image for p in val}
    assert [p.image for p in again.pairs("val")[0]] == [p.image for p in val]
    with pytest.raises(DatasetError, match="val_fraction"):
        FolderDataModule(root, val_fraction=1.5)


# ---- broken files --------------------------------------------------------------------------------------


@pytest.fixture
def faulty(exports, tmp_path):
    """The colour-mask set with one fault of each kind planted in its train split."""
    root = tmp_path / "faulty"
    shutil.copytree(exports["colour"], root)
    images, masks = root / "images" / "train", root / "masks" / "train"
    # a photo-sized JPEG cut at a third, as an interrupted copy leaves it: cv2 still decodes it (half grey)
    Image.open(images / "train_0000.jpg").resize((384, 256)).save(images / "train_0000.jpg", quality=92)
    Image.open(masks / "train_0000.png").resize((384, 256), Image.NEAREST).save(masks / "train_0000.png")
    data = (images / "train_0000.jpg").read_bytes()
    (images / "train_0000.jpg").write_bytes(data[: len(data) // 3])
    # a colour nobody listed in the table
    stray = np.array(Image.open(masks / "train_0001.png"))
    stray[:10, :10] = (77, 1, 2)
    Image.fromarray(stray).save(masks / "train_0001.png")
    # EXIF orientation 6 on a non-square photo whose mask is stored unrotated
    photo = Image.open(images / "train_0002.jpg")
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(images / "train_0002.jpg", exif=exif.tobytes(), quality=92)
    # and on a square one (64x64): the sizes cannot tell
    square = Image.open(images / "train_0003.jpg").crop((0, 0, 64, 64))
    square.save(images / "train_0003.jpg", exif=exif.tobytes(), quality=92)
    Image.open(masks / "train_0003.png").crop((0, 0, 64, 64)).save(masks / "train_0003.png")
    # a truncated PNG mask
    data = (masks / "train_0004.png").read_bytes()
    (masks / "train_0004.png").write_bytes(data[: len(data) // 2])
    # what a Mac and Windows leave behind
    (images / "._train_0005.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (masks / "._train_0005.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (images / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (images / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    return root


def test_the_checker_names_every_broken_file(faulty, capsys):
    before = _snapshot(faulty)
    report = check_split(FolderDataModule(faulty), "train", workers=2)
    assert report is not None
    assert report.images == 6  # the `._` files, .DS_Store and Thumbs.db are not images
    assert sorted(Path(p).name for p in report.skipped) == [
        ".DS_Store", "._train_0005.jpg", "._train_0005.png", "Thumbs.db",
    ]  # fmt: skip
    broken = "\n".join(report.unreadable)
    assert "train_0000.jpg: truncated (Premature end of JPEG file" in broken
    assert "train_0004.png" in broken
    assert len(report.unreadable) == 2
    orientation = "\n".join(report.orientation)
    assert "train_0002.jpg" in orientation and "train_0003.jpg" in orientation
    assert "EXIF orientation 6" in orientation and "cv2 IMREAD_COLOR applies the orientation" in orientation
    assert "sizes cannot tell" in next(o for o in report.orientation if "train_0003" in o)
    assert report.size_mismatch == []  # the rotated photo is named for its rotation, not as a mismatch
    assert report.unknown == [(77, 1, 2)]
    assert report.unknown_files[(77, 1, 2)] == [(str(faulty / "masks" / "train" / "train_0001.png"), 100)]
    assert main([str(faulty)]) == 1
    out = capsys.readouterr().out
    assert (
        "(77, 1, 2) (100 px in all): " + str(faulty / "masks" / "train" / "train_0001.png") + " (100 px)"
        in out
    )
    assert out.count("skipped 4 hidden or system file(s)") == 1
    assert _snapshot(faulty) == before  # nothing written or moved


def test_an_unknown_grey_value_is_traced_to_its_files(exports, tmp_path, capsys):
    root = tmp_path / "grey"
    shutil.copytree(exports["flat"], root)
    masks = sorted((root / "masks").glob("*.png"))
    for mask, n in ((masks[1], 12), (masks[4], 30)):
        label = np.array(Image.open(mask))
        label.ravel()[:n] = 77
        Image.fromarray(label).save(mask)
    module = FolderDataModule(root, val_fraction=0.3)
    reports = [check_split(module, s, workers=1) for s in ("train", "val")]
    files = {path: n for r in reports if r is not None for path, n in r.unknown_files.get(77, [])}
    assert files == {str(masks[1]): 12, str(masks[4]): 30}
    assert main([str(root), "data.val_fraction=0.3"]) == 1
    out = capsys.readouterr().out
    assert f"{masks[1]} (12 px)" in out or f"{masks[4]} (30 px)" in out


def test_output_to_a_pipe_is_not_wrapped(faulty):
    proc = subprocess.run([sys.executable, "-m", "bisenet_pl.data.check", str(faulty)], capture_output=True,
                          text=True, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"}, timeout=120)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    long_lines = [line for line in proc.stdout.splitlines() if len(line) > 80]
    assert long_lines, "nothing longer than 80 columns: the output was wrapped"
    full = str(faulty / "masks" / "train" / "train_0001.png")
    assert any(full in line and "(77, 1, 2)" in line for line in proc.stdout.splitlines())


def test_strict_decoding_and_training_decode_name_a_truncated_file(faulty, tmp_path):
    truncated = faulty / "images" / "train" / "train_0000.jpg"
    decoded = strict_decode(truncated)
    assert decoded.image is not None and decoded.image.shape == (256, 384, 3)  # cv2 alone: half grey
    assert any("Premature end of JPEG file" in p for p in decoded.problems)
    with pytest.raises(DatasetError, match=r"train_0000\.jpg: it is truncated"):
        load_image(truncated)
    sound = faulty / "images" / "train" / "train_0001.jpg"
    assert strict_decode(sound).problems == [] and load_image(sound).shape == (64, 96, 3)
    # a corrupt middle (libjpeg warns 'Corrupt JPEG data' and goes on) is a finding too
    data = bytearray(sound.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 20] = b"\xff\x00" * 10
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(bytes(data))
    assert strict_decode(corrupt).problems
    # the rotated non-square photo, found mid-run, is one message naming the rotation
    dataset = FolderDataModule(faulty).make_dataset("train", None, keep_original=False, with_labels=True)
    with pytest.raises(DatasetError, match=r"train_0002\.jpg .*EXIF orientation 6"):
        dataset[2]


def test_trainings_first_file_check_uses_the_same_rules(faulty):
    with pytest.raises(DatasetError, match=r"train_0000\.jpg: truncated.*python -m bisenet_pl.data.check"):
        FolderDataModule(faulty).first_file_check("train")
    assert is_skipped(faulty / "images" / "train" / "._train_0005.jpg")
    assert is_skipped(Path("a/__MACOSX/b.jpg"), Path("a")) and not is_skipped(Path("a/b.jpg"), Path("a"))


def test_batch_1_per_device_is_refused_with_the_reason_and_the_fix():
    with pytest.raises(ConfigError, match=r"data.batch_size=1: BiSeNetV2 needs at least 2 images per device"):
        check_trainable(1, (64, 64))
    check_trainable(2, (64, 64))
    with pytest.raises(ConfigError, match="crop_size"):
        check_trainable(2, (0, 64))
