"""The decoded-frame cache (`python -m bisenet_pl.data.cache`): written once with its size printed first,
checked pixel for pixel against the PNGs, the same items as the PNGs, and refused whenever it does not
match its source (the file named); a write that runs out of disk leaves nothing behind and says how much
was needed."""

from __future__ import annotations

import errno
import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

import bisenet_pl.data.frame_cache_writer as cache_mod
from bisenet_pl.data.cache import main, write_split
from bisenet_pl.data.cityscapes import LABEL_ID_TO_TRAIN_ID, CityscapesDataset, find_samples
from bisenet_pl.data.cityscapes_datamodule import CityscapesDataModule
from bisenet_pl.data.frame_cache import CacheError, FrameCache
from bisenet_pl.data.synthetic import make_synthetic_cityscapes
from bisenet_pl.data.transforms import build_test_transform, build_train_transform


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_synthetic_cityscapes(
        tmp_path_factory.mktemp("cache_src") / "cs", n_train=3, n_val=2, n_test=0, height=128, width=256,
        seed=4,
    )  # fmt: skip


@pytest.fixture
def root(source, tmp_path):
    """A private copy of the source dataset (the refusal tests change it)."""
    copy = tmp_path / "cs"
    shutil.copytree(source, copy)
    return copy


def _write(root, cache, split="train"):
    lines: list[str] = []
    write_split(root, cache, split, echo=lines.append)
    return lines


def test_written_frames_are_the_pngs_pixels_and_the_size_comes_first(root, tmp_path):
    cache = tmp_path / "cache"
    lines = _write(root, cache)
    assert "GiB on disk" in lines[0] and "3 frames" in lines[0] and "free" in lines[0], lines
    assert "3/3 frames written and checked" in lines[-1]
    samples = find_samples(root, "train")
    frames = FrameCache(cache, root, "train", samples)
    for i, sample in enumerate(samples):
        assert np.array_equal(frames.image(i), cv2.imread(str(sample.image))[..., ::-1])
        ids = np.array(Image.open(sample.label))
        want = LABEL_ID_TO_TRAIN_ID[ids] if sample.label_kind == "labelIds" else ids
        assert np.array_equal(frames.label(i), want)
    used = sum(p.stat().st_size for p in (cache / "train").rglob("*.npy"))
    assert used == 3 * (128 * 256 * 4 + 2 * 128)  # what the first line announced: RGB + ids + headers


@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_items_from_the_cache_equal_items_from_the_pngs(root, tmp_path, order):
    cache = tmp_path / "cache"
    _write(root, cache)
    kw = dict(scale=(256, 128), crop_size=(64, 64), input_order=order)
    pngs = CityscapesDataset(root, "train", build_train_transform(seed=7, **kw))
    cached = CityscapesDataset(root, "train", build_train_transform(seed=7, **kw), cache=cache)
    for _ in range(3):  # several draws per frame
        for i in range(len(pngs)):
            a, b = pngs[i], cached[i]
            assert a["image"].equal(b["image"]) and a["label"].equal(b["label"]) and a["name"] == b["name"]
    _write(root, cache, "val")  # and the val split with the originals ms+flip keeps
    val = CityscapesDataset(root, "val", build_test_transform((256, 128)), keep_original=True, cache=cache)
    ref = CityscapesDataset(root, "val", build_test_transform((256, 128)), keep_original=True)
    for i in range(len(val)):
        a, b = ref[i], val[i]
        assert a["image"].equal(b["image"]) and a["original"].equal(b["original"])
        assert a["label"].equal(b["label"])


def test_datamodule_trains_from_the_cache(root, tmp_path):
    cache = tmp_path / "cache"
    assert main([f"data.root={root}", f"data.cache={cache}"]) == 0
    dm = CityscapesDataModule(root, cache=str(cache), batch_size=2, num_workers=0, crop_size=(64, 64),
                              scale=(256, 128), test_scale=(256, 128), generate_if_missing=False)  # fmt: skip
    dm.setup("fit")
    assert dm.train_dataset.cache is not None and dm.val_dataset.cache is not None
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 64)


def _refused(root, cache, match):
    with pytest.raises(CacheError, match=match) as err:
        CityscapesDataset(root, "train", cache=cache)
    assert "python -m bisenet_pl.data.cache" in str(err.value)  # the fix
    return str(err.value)


def test_a_changed_source_file_is_refused_and_named(root, tmp_path):
    cache = tmp_path / "cache"
    _write(root, cache)
    label = find_samples(root, "train")[1].label
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: maybe edited
    assert str(label) in _refused(root, cache, "changed since the cache")
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns))
    CityscapesDataset(root, "train", cache=cache)  # back as it was: accepted
    image = find_samples(root, "train")[0].image
    image.write_bytes(image.read_bytes() + b"\0")  # other content
    assert str(image) in _refused(root, cache, "size differs")


def test_a_missing_or_added_frame_is_refused_and_named(root, tmp_path):
    cache = tmp_path / "cache"
    _write(root, cache)
    first = find_samples(root, "train")[0]
    extra = first.image.with_name("zz_000000_000001_leftImg8bit.png")
    shutil.copy(first.image, extra)
    shutil.copy(first.label, first.label.with_name("zz_000000_000001_gtFine_labelIds.png"))
    assert str(extra) in _refused(root, cache, "is not in the cache")
    extra.unlink()
    first.image.unlink()  # gone from the dataset, still in the cache
    assert first.image.name in _refused(root, cache, "no longer in the dataset")


def test_a_damaged_cache_is_refused_and_named(root, tmp_path):
    cache = tmp_path / "cache"
    _write(root, cache)
    npy = sorted((cache / "train").rglob("*.label.npy"))[0]
    npy.write_bytes(npy.read_bytes()[:-10])
    assert str(npy) in _refused(root, cache, "has .* bytes")
    npy.unlink()
    assert str(npy) in _refused(root, cache, "is missing")
    (cache / "train" / "manifest.json").unlink()  # as after an interrupted write
    _refused(root, cache, "manifest.json is missing")


def test_running_out_of_disk_removes_the_folder_and_says_how_much(root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_save, calls = cache_mod._save, []

    def save(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(path, array)

    monkeypatch.setattr(cache_mod, "_save", save)
    with pytest.raises(CacheError, match=r"filled up .* GiB were needed") as err:
        _write(root, cache)
    assert str(cache / "train") in str(err.value)
    assert not (cache / "train").exists()


def test_a_split_that_does_not_fit_is_refused_before_writing(root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    tiny = shutil._ntuple_diskusage(10**6, 10**6, 1000)
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda _: tiny)
    with pytest.raises(CacheError, match=r"not enough disk .* GiB needed"):
        _write(root, cache)
    assert not (cache / "train").exists()


def test_a_frame_that_fails_its_pixel_check_is_named_and_nothing_is_kept(root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real = cache_mod._reference_image_rgb

    def off_by_one(path):
        image = real(path).copy()
        image[0, 0, 0] ^= 1
        return image

    monkeypatch.setattr(cache_mod, "_reference_image_rgb", off_by_one)
    first = find_samples(root, "train")[0].image
    with pytest.raises(CacheError, match="differ from cv2's decode") as err:
        _write(root, cache)
    assert str(first) in str(err.value)
    assert not (cache / "train").exists()


def test_command_line(root, tmp_path, capsys):
    assert main([f"data.root={root}", f"data.cache={tmp_path / 'c'}", "splits=[val]"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "GiB on disk" in out[0] and "val" in out[0]
    assert (tmp_path / "c" / "val" / "manifest.json").is_file() and not (tmp_path / "c" / "train").exists()
    assert main([f"data.root={tmp_path / 'nowhere'}", f"data.cache={tmp_path / 'd'}"]) == 1
    with pytest.raises(SystemExit, match="unknown argument"):
        main(["root=x"])


def test_a_symlinked_split_folder_is_cached_and_accepted(root, tmp_path):
    """Cityscapes' folders often live on another disk, linked into the dataset root."""
    elsewhere = tmp_path / "elsewhere"
    (root / "leftImg8bit" / "train").rename(elsewhere)
    (root / "leftImg8bit" / "train").symlink_to(elsewhere, target_is_directory=True)
    cache = tmp_path / "cache"
    _write(root, cache)
    dataset = CityscapesDataset(root, "train", cache=cache)
    assert len(dataset) == 3 and dataset[0]["image"].shape[0] == 3
