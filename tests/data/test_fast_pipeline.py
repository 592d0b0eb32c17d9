"""The faster data pipeline gives the same pixels as the reference one, bit for bit.

- (the PNG decoders: tests/data/test_png.py)
- the train pipeline fed RGB (`input_order="rgb"`, no channel swap after the decode) gives the same output,
  per seed, as the BGR pipeline mmseg's order implies;
- `NormalizeToRGB`'s lookup table gives `normalize`'s floats, and PhotoMetricDistortion's fused
  brightness + contrast LUT gives the bytes of the two steps done one after the other.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
from PIL import Image

from bisenet_pl.data import cityscapes as C
from bisenet_pl.data.cityscapes import CityscapesDataset, find_samples, load_image, load_label
from bisenet_pl.data.preprocess import normalize
from bisenet_pl.data.synthetic import make_synthetic_cityscapes
from bisenet_pl.data.transforms import (
    CatMaxRandomCrop,
    NormalizeToRGB,
    PhotoMetricDistortion,
    RandomResize,
    _affine_lut,
    build_test_transform,
    build_train_transform,
    seed_transform,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_synthetic_cityscapes(
        tmp_path_factory.mktemp("fast") / "cs", n_train=3, n_val=0, n_test=0, height=256, width=512, seed=3
    )


def _bits(x: np.ndarray) -> np.ndarray:
    """float32 values as their bit patterns (exact comparison, -0.0 vs 0.0 and NaNs included)."""
    return np.ascontiguousarray(x).view(np.uint32)


def test_labels_with_bad_ids_are_still_named(tmp_path):
    path = tmp_path / "a_gtFine_labelIds.png"
    label = np.zeros((8, 8), np.uint8)
    label[0, :2] = [40, 200]
    Image.fromarray(label).save(path)
    sample = C.Sample(tmp_path / "a_leftImg8bit.png", path, "labelIds")
    with pytest.raises(C.DatasetError, match=r"holds ids \[40, 200\]"):
        load_label(sample)


def test_normalize_table_gives_normalize_floats():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image[0, :3] = [[0, 0, 0], [255, 255, 255], [128, 7, 250]]
    for order in ("bgr", "rgb"):
        got = NormalizeToRGB(input_order=order).apply(image)
        want = normalize(image, bgr=order == "bgr")
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.array_equal(_bits(got), _bits(want))  # bit for bit
    crop = image[3:30, 5:40]  # a non-contiguous view, as after the crop
    assert np.array_equal(NormalizeToRGB().apply(crop), normalize(crop, bgr=True))


def _two_step_photometric(img, brightness, contrast_first, saturation, hue, contrast_last):
    """The steps one by one, as mmseg (and this project before the fused LUT) does them, on BGR."""
    if brightness is not None:
        img = cv2.LUT(img, _affine_lut(1.0, brightness))
    if contrast_first is not None:
        img = cv2.LUT(img, _affine_lut(contrast_first, 0.0))
    if saturation is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[..., 1] = cv2.LUT(hsv[..., 1], _affine_lut(saturation, 0.0))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if hue is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[..., 0] = cv2.LUT(hsv[..., 0], ((np.arange(256) + hue) % 180).astype(np.uint8))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if contrast_last is not None:
        img = cv2.LUT(img, _affine_lut(contrast_last, 0.0))
    return img


def test_photometric_fused_lut_and_rgb_order_give_the_same_bytes():
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    params = [
        (10.5, 1.3, 0.7, 5, None),
        (-31.0, 0.6, None, -18, None),
        (None, 1.45, 1.2, None, None),
        (3.0, None, None, 17, 0.55),
        (None, None, 1.49, -1, 1.4),
    ]
    for brightness, contrast_first, saturation, hue, contrast_last in params:
        kw = dict(
            brightness=brightness,
            contrast_first=contrast_first,
            saturation=saturation,
            hue=hue,
            contrast_last=contrast_last,
        )
        want = _two_step_photometric(bgr, **kw)
        assert np.array_equal(PhotoMetricDistortion().apply(bgr, **kw), want)
        rgb_out = PhotoMetricDistortion(input_order="rgb").apply(np.ascontiguousarray(bgr[..., ::-1]), **kw)
        assert np.array_equal(rgb_out, want[..., ::-1])


def test_rgb_pipeline_gives_the_bgr_pipeline_output_per_seed(root):
    samples = find_samples(root, "train")
    bgr_pipe = build_train_transform(crop_size=(128, 128), scale=(512, 256))
    rgb_pipe = build_train_transform(crop_size=(128, 128), scale=(512, 256), input_order="rgb")
    assert rgb_pipe.input_order == "rgb" and bgr_pipe.input_order == "bgr"
    for i, sample in enumerate(samples):
        bgr, label = load_image(sample.image), load_label(sample)
        rgb = load_image(sample.image, "rgb")
        for seed in range(12):
            seed_transform(bgr_pipe, [seed, i])
            seed_transform(rgb_pipe, [seed, i])
            a = bgr_pipe(image=bgr, mask=label)
            b = rgb_pipe(image=rgb, mask=label)
            assert np.array_equal(a["mask"], b["mask"])
            assert np.array_equal(_bits(a["image"]), _bits(b["image"]))
    test_bgr, test_rgb = build_test_transform((512, 256)), build_test_transform((512, 256), input_order="rgb")
    assert np.array_equal(test_bgr(image=bgr)["image"], test_rgb(image=rgb)["image"])


def test_dataset_items_equal_through_either_order(root):
    rgb = CityscapesDataset(root, "train", build_train_transform((512, 256), crop_size=(128, 128), seed=5,
                                                                  input_order="rgb"))  # fmt: skip
    bgr = CityscapesDataset(root, "train", build_train_transform((512, 256), crop_size=(128, 128), seed=5))
    assert rgb._input_order() == "rgb" and bgr._input_order() == "bgr"
    for i in range(len(rgb)):
        a, b = rgb[i], bgr[i]
        assert a["image"].equal(b["image"]) and a["label"].equal(b["label"])


class _BincountCrop(CatMaxRandomCrop):
    """The crop's acceptance test as it was: `np.bincount` over the crop."""

    def accepts(self, label_crop: np.ndarray) -> bool:
        counts = np.bincount(label_crop.ravel(), minlength=256)
        counts[self.ignore_index] = 0
        present = counts[counts > 0]
        return present.size > 1 and present.max() / present.sum() < self.cat_max_ratio


class _StepByStepPhotometric(PhotoMetricDistortion):
    def apply(self, img, brightness=None, contrast_first=None, saturation=None, hue=None, contrast_last=None,
              **params):  # fmt: skip
        return _two_step_photometric(img, brightness, contrast_first, saturation, hue, contrast_last)


class _ReferenceNormalize(A.ImageOnlyTransform):
    def apply(self, img, **params):
        return normalize(img, bgr=True)


def _reference_pipeline(crop: tuple[int, int], scale: tuple[int, int]) -> A.Compose:
    """The train pipeline as it was before the speedups: bincount crop test, photometric steps one by one,
    `normalize`, albumentations' own PadIfNeeded (the same random draws in the same order)."""
    return A.Compose([
        RandomResize(scale=scale),
        _BincountCrop(crop_size=crop),
        A.HorizontalFlip(p=0.5),
        _StepByStepPhotometric(),
        _ReferenceNormalize(p=1.0),
        A.PadIfNeeded(min_height=crop[0], min_width=crop[1], position="top_left",
                      border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255),
    ])  # fmt: skip


def test_train_pipeline_output_per_seed_equals_the_reference_pipeline(root):
    samples = find_samples(root, "train")
    crop, scale = (160, 160), (512, 256)  # crops smaller than the image (some padded: r < 0.625)
    ours = build_train_transform(scale=scale, crop_size=crop, input_order="rgb")
    reference = _reference_pipeline(crop, scale)
    padded = 0
    for i, sample in enumerate(samples):
        bgr, rgb, label = load_image(sample.image), load_image(sample.image, "rgb"), load_label(sample)
        for seed in range(25):
            seed_transform(ours, [seed, i])
            seed_transform(reference, [seed, i])
            a, b = ours(image=rgb, mask=label), reference(image=bgr, mask=label)
            assert np.array_equal(a["mask"], b["mask"]), seed
            assert a["image"].shape == b["image"].shape == (*crop, 3)
            assert np.array_equal(_bits(a["image"]), _bits(b["image"])), seed
            padded += bool((b["mask"][-1] == 255).all())
            chw = a["image"].transpose(2, 0, 1)
            assert chw.flags.c_contiguous  # the item's tensor needs no copy
    assert padded > 0  # the padded case was met


def test_crop_acceptance_counts_like_bincount():
    rng = np.random.default_rng(3)
    ours, reference = CatMaxRandomCrop(), _BincountCrop()
    for _ in range(200):
        k = int(rng.integers(1, 5))
        classes = rng.choice([0, 1, 2, 5, 13, 18, 255], size=k, replace=False)
        weights = rng.dirichlet(np.ones(k))
        label = rng.choice(classes, size=(64, 80), p=weights).astype(np.uint8)
        view = label[3:60, 5:70]
        assert ours.accepts(view) == reference.accepts(view)
