"""mmseg's train and test pipelines (docs/reproduction.md#augmentation), each custom step against a literal
NumPy/cv2 reference.

The references below follow docs/reproduction.md#augmentation word by word (mmseg's `np.unique` check,
per-pixel float arithmetic,
`astype(np.uint8)` after each photometric step) and draw from a numpy Generator in the same order as the
transforms, so "same seed in, same bytes out" proves the transforms implement the rule.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bisenet_pl.data.cityscapes import MEAN, STD
from bisenet_pl.data.preprocess import keep_ratio_size, normalize
from bisenet_pl.data.transforms import (
    CatMaxRandomCrop,
    KeepRatioResize,
    NormalizeToRGB,
    PhotoMetricDistortion,
    RandomResize,
    build_test_transform,
    build_train_transform,
)

# ---------------------------------------------------------------------------------------------------
# References, written from docs/reproduction.md#augmentation
# ---------------------------------------------------------------------------------------------------


def ref_random_resize(img, seg, rng, scale=(2048, 1024), ratio_range=(0.5, 2.0)):
    ratio = rng.random() * (ratio_range[1] - ratio_range[0]) + ratio_range[0]
    target = int(scale[0] * ratio), int(scale[1] * ratio)
    h, w = img.shape[:2]
    f = min(max(target) / max(h, w), min(target) / min(h, w))
    size = int(w * f + 0.5), int(h * f + 0.5)
    return (
        cv2.resize(img, size, interpolation=cv2.INTER_LINEAR),
        cv2.resize(seg, size, interpolation=cv2.INTER_NEAREST),
    )


def ref_random_crop(img, seg, rng, crop=(1024, 1024), cat_max_ratio=0.75, ignore=255):
    def bbox():
        oh = rng.integers(0, max(img.shape[0] - crop[0], 0) + 1)
        ow = rng.integers(0, max(img.shape[1] - crop[1], 0) + 1)
        return oh, oh + crop[0], ow, ow + crop[1]

    box = bbox()
    for _ in range(10):
        labels, cnt = np.unique(seg[box[0] : box[1], box[2] : box[3]], return_counts=True)
        cnt = cnt[labels != ignore]
        if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < cat_max_ratio:
            break
        box = bbox()
    return img[box[0] : box[1], box[2] : box[3]], seg[box[0] : box[1], box[2] : box[3]]


def ref_photometric(img, rng):
    def convert(x, alpha=1, beta=0):
        x = x.astype(np.float32) * alpha + beta
        x = np.clip(x, 0, 255)
        return x.astype(np.uint8)

    def contrast(x):
        if rng.integers(2):
            return convert(x, alpha=rng.uniform(0.5, 1.5))
        return x

    if rng.integers(2):
        img = convert(img, beta=rng.uniform(-32, 32))
    mode = rng.integers(2)
    if mode == 1:
        img = contrast(img)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=rng.uniform(0.5, 1.5))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + rng.integers(-18, 18)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0:
        img = contrast(img)
    return img


def with_rng(transform, seed):
    transform.random_generator = np.random.default_rng(seed)
    return transform


@pytest.fixture(scope="module")
def scene():
    """A 2:1 BGR image and a label with several classes in blocks (so crops can fail the ratio test)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (256, 512, 3), dtype=np.uint8)
    seg = np.zeros((256, 512), dtype=np.uint8)
    seg[:, 300:] = 1
    seg[200:, 420:] = 2
    seg[:20] = 255
    return img, seg


# ---------------------------------------------------------------------------------------------------
# RandomResize / Resize
# ---------------------------------------------------------------------------------------------------


def test_keep_ratio_size_follows_mmcv_rule_for_2to1_and_other_aspects():
    # Cityscapes frame, r = 0.5, 1.0, 1.25, 2.0
    assert keep_ratio_size(1024, 2048, (1024, 512)) == (512, 1024)
    assert keep_ratio_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    assert keep_ratio_size(1024, 2048, (2560, 1280)) == (1280, 2560)
    assert keep_ratio_size(1024, 2048, (4096, 2048)) == (2048, 4096)
    # 500x300 (w x h) into (2048, 1024): f = min(2048/500, 1024/300) = 3.4133 -> (1707, 1024)
    assert keep_ratio_size(300, 500, (2048, 1024)) == (1024, 1707)
    # portrait 300x600 into (1024, 512): f = min(1024/600, 512/300) = 1.7067 -> (512, 1024)
    assert keep_ratio_size(600, 300, (1024, 512)) == (1024, 512)
    # square into (2048, 1024): the short side of the box binds -> 1024x1024
    assert keep_ratio_size(777, 777, (2048, 1024)) == (1024, 1024)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(64, 128), (60, 100), (90, 70)])
def test_random_resize_matches_reference(seed, shape):
    rng = np.random.default_rng(100 + seed)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    seg = rng.integers(0, 19, shape, dtype=np.uint8)
    out = with_rng(RandomResize(scale=(256, 128)), seed)(image=img, mask=seg)
    ref_img, ref_seg = ref_random_resize(img, seg, np.random.default_rng(seed), scale=(256, 128))
    assert out["image"].shape == ref_img.shape
    assert np.array_equal(out["image"], ref_img)
    assert np.array_equal(out["mask"], ref_seg)


def test_random_resize_sizes_cover_half_to_double_of_the_absolute_box():
    t = with_rng(RandomResize(scale=(2048, 1024), ratio_range=(0.5, 2.0)), 0)
    img = np.zeros((100, 300, 3), np.uint8)  # 3:1 input, far from the 2048x1024 box
    widths = [t(image=img)["image"].shape[1] for _ in range(200)]
    # the long side binds for 3:1 inputs: width = int(2048 r) in [1024, 4096)
    assert 1024 <= min(widths) < 1100 and 3900 < max(widths) < 4096


def test_test_resize_resizes_the_image_but_not_the_label():
    img = np.zeros((512, 1024, 3), np.uint8)
    seg = np.full((512, 1024), 7, np.uint8)
    out = build_test_transform(scale=(2048, 1024))(image=img, mask=seg)
    assert out["image"].shape == (1024, 2048, 3) and out["image"].dtype == np.float32
    assert out["mask"].shape == (512, 1024)
    out = KeepRatioResize(scale=(2048, 1024))(image=img, mask=seg)  # with resize_mask=True (train-style)
    assert out["mask"].shape == (1024, 2048)


# ---------------------------------------------------------------------------------------------------
# RandomCrop with cat_max_ratio
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_cat_max_crop_matches_reference(scene, seed):
    img, seg = scene
    out = with_rng(CatMaxRandomCrop(crop_size=(128, 128)), seed)(image=img, mask=seg)
    ref_img, ref_seg = ref_random_crop(img, seg, np.random.default_rng(seed), crop=(128, 128))
    assert np.array_equal(out["image"], ref_img)
    assert np.array_equal(out["mask"], ref_seg)


class ScriptedCrop(CatMaxRandomCrop):
    """The crop with its offsets replaced by a script, counting the draws."""

    def __init__(self, boxes, **kw):
        super().__init__(**kw)
        self.boxes, self.draws = list(boxes), 0

    def _draw(self, height, width):
        box = self.boxes[self.draws]
        self.draws += 1
        return box


def test_crop_rejects_one_class_crop_and_takes_the_next_good_one():
    seg = np.zeros((4, 8), np.uint8)  # left half: road only; right half: road + sidewalk
    seg[:, 6:] = 1
    one_class, mixed = (0, 4, 0, 4), (0, 4, 4, 8)
    t = ScriptedCrop([one_class, one_class, mixed, one_class], crop_size=(4, 4))
    out = t(image=np.zeros((4, 8, 3), np.uint8), mask=seg)
    assert t.draws == 3
    assert np.array_equal(out["mask"], seg[:, 4:8])


def test_crop_rejects_a_dominant_class_at_75_percent():
    t = CatMaxRandomCrop(crop_size=(4, 4), cat_max_ratio=0.75)
    seg = np.zeros((4, 4), np.uint8)
    seg[0, :4] = 1  # 12 of 16 = exactly 75 %: rejected (mmseg needs strictly less)
    assert not t.accepts(seg)
    seg[1, 0] = 1  # 11 of 16
    assert t.accepts(seg)
    seg[:] = 255
    seg[0, 0], seg[0, 1] = 3, 4  # ignore pixels do not count: 1 vs 1
    assert t.accepts(seg)


def test_crop_uses_the_eleventh_candidate_unchecked():
    boxes = [(0, 4, 0, 4)] * 10 + [(0, 4, 1, 5)] + [(9, 9, 9, 9)] * 5
    t = ScriptedCrop(boxes, crop_size=(4, 4))
    out = t(image=np.zeros((4, 8, 3), np.uint8), mask=np.zeros((4, 8), np.uint8))  # one class everywhere
    assert t.draws == 11
    assert out["mask"].shape == (4, 4)
    assert t.params["box"] == (0, 4, 1, 5)


def test_crop_of_a_smaller_image_is_clipped_not_padded():
    img = np.zeros((512, 2000, 3), np.uint8)
    seg = np.tile(np.arange(2000, dtype=np.uint8) % 19, (512, 1))
    out = CatMaxRandomCrop(crop_size=(1024, 1024))(image=img, mask=seg)
    assert out["image"].shape == (512, 1024, 3) and out["mask"].shape == (512, 1024)


# ---------------------------------------------------------------------------------------------------
# PhotoMetricDistortion
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_photometric_matches_reference(seed):
    img = np.random.default_rng(seed).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    out = with_rng(PhotoMetricDistortion(), seed)(image=img)["image"]
    ref = ref_photometric(img, np.random.default_rng(seed))
    assert out.dtype == np.uint8
    assert np.array_equal(out, ref)


def test_photometric_clips_to_uint8_after_every_step():
    t = PhotoMetricDistortion()
    img = np.full((2, 2, 3), 250, np.uint8)
    # brightness +30 clips 280 -> 255, then contrast x0.5 -> 127.5 truncated to 127.
    # Without the intermediate clip the answer would be 140.
    out = t.apply(img, brightness=30.0, contrast_first=0.5)
    assert (out == 127).all()
    # contrast last, after a brightness that went below 0: 10 - 32 -> 0, x1.5 -> 0 (not negative)
    out = t.apply(np.full((2, 2, 3), 10, np.uint8), brightness=-32.0, contrast_last=1.5)
    assert (out == 0).all()
    # truncation, not rounding: 101 x 1.49 = 150.49 -> 150; 3 x 0.5 = 1.5 -> 1
    assert (t.apply(np.full((1, 1, 3), 101, np.uint8), contrast_first=1.49) == 150).all()
    assert (t.apply(np.full((1, 1, 3), 3, np.uint8), contrast_last=0.5) == 1).all()


def test_photometric_hue_delta_lies_in_minus18_to_17_and_steps_fire_half_the_time():
    t = with_rng(PhotoMetricDistortion(), 0)
    params = [t.get_params() for _ in range(4000)]
    hues = [p["hue"] for p in params if p["hue"] is not None]
    assert min(hues) == -18 and max(hues) == 17
    assert 0.45 < len(hues) / len(params) < 0.55
    first = sum(p["contrast_first"] is not None for p in params)
    last = sum(p["contrast_last"] is not None for p in params)
    assert all(p["contrast_first"] is None or p["contrast_last"] is None for p in params)
    assert 0.2 < first / len(params) < 0.3 and 0.2 < last / len(params) < 0.3


def test_photometric_hue_wraps_modulo_180():
    bgr = cv2.cvtColor(np.array([[[175, 255, 255]]], np.uint8), cv2.COLOR_HSV2BGR)
    out = PhotoMetricDistortion().apply(bgr, hue=10)
    assert cv2.cvtColor(out, cv2.COLOR_BGR2HSV)[0, 0, 0] in (4, 5, 6)  # 175 + 10 - 180 = 5 (+-1 rounding)


# ---------------------------------------------------------------------------------------------------
# Normalise, pad, the whole pipeline
# ---------------------------------------------------------------------------------------------------


def test_normalize_converts_bgr_to_rgb_with_mmseg_statistics():
    bgr = np.array([[[0, 128, 255]]], np.uint8)
    out = NormalizeToRGB()(image=bgr)["image"]
    expected = (np.array([255, 128, 0], np.float64) - np.array(MEAN)) / np.array(STD)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


def _numpy_reference(image: np.ndarray, bgr: bool) -> np.ndarray:
    """(x - mean) / std in float64, channel order reversed for BGR: what `normalize` must approximate."""
    rgb = image[..., ::-1] if bgr else image
    return (rgb.astype(np.float64) - np.array(MEAN)) / np.array(STD)


@pytest.mark.parametrize("bgr", [False, True], ids=["rgb", "bgr"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32], ids=["uint8", "float32"])
def test_normalize_is_right_for_every_shape_including_one_pixel_wide(bgr, dtype):
    # Every height and width 1..5 (OpenCV 5.1 left width-1 images unnormalised through its dst argument),
    # then random larger shapes; each against a plain NumPy reference, and the input left untouched.
    rng = np.random.default_rng(7)
    shapes = [(h, w) for h in range(1, 6) for w in range(1, 6)]
    shapes += [tuple(int(x) for x in rng.integers(1, 300, 2)) for _ in range(20)]
    for h, w in shapes:
        image = rng.integers(0, 256, (h, w, 3)).astype(dtype)
        before = image.copy()
        out = normalize(image, bgr=bgr)
        assert out.dtype == np.float32 and out.shape == (h, w, 3) and out.flags.c_contiguous
        reference = _numpy_reference(image, bgr)
        np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-6, err_msg=f"{h}x{w}")
        assert np.array_equal(image, before), "normalize wrote into its input"


def test_normalize_rounds_like_mmcv_float32_arithmetic():
    # mmcv's imnormalize: float32 image, mean and 1/std rounded to float32, float32 subtract and multiply.
    # On an image OpenCV handles correctly its result is bit-identical to ours.
    image = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    expected = cv2.multiply(
        cv2.subtract(image.astype(np.float32), np.array(MEAN, np.float64).reshape(1, -1)),
        1.0 / np.array(STD, np.float64).reshape(1, -1),
    )
    assert np.array_equal(normalize(image), expected)


def test_normalize_refuses_an_image_that_does_not_match_the_statistics():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        normalize(np.zeros((4, 4), np.uint8))


def test_512_high_image_gives_512_rows_of_data_and_1024_after_padding():
    img = np.random.default_rng(1).integers(0, 256, (512, 1024, 3), dtype=np.uint8)
    seg = np.tile(np.arange(1024, dtype=np.uint8) // 64, (512, 1))  # 16 classes in stripes
    # ratio fixed at 0.5 -> box (1024, 512): the image keeps its size; crop 1024x1024 -> 512 rows
    t = build_train_transform(ratio_range=(0.5, 0.5), flip_prob=0.0, photometric=False, seed=0)
    out = t(image=img, mask=seg)
    image, mask = out["image"], out["mask"]
    assert image.shape == (1024, 1024, 3) and mask.shape == (1024, 1024)
    assert (mask[512:] == 255).all()
    assert (image[512:] == 0.0).all()  # padded AFTER normalising: exactly 0, not (0 - mean) / std
    assert (mask[:512] != 255).all()
    np.testing.assert_allclose(image[:512], NormalizeToRGB()(image=img)["image"], rtol=1e-6)
    assert np.array_equal(mask[:512], seg)


def test_flip_flips_image_and_label_together():
    # left half red + class 1, right half blue + class 2; any crop/flip must keep colour and class aligned
    img = np.zeros((256, 512, 3), np.uint8)
    img[:, :256] = (0, 0, 255)  # BGR red
    img[:, 256:] = (255, 0, 0)  # BGR blue
    seg = np.ones((256, 512), np.uint8)
    seg[:, 256:] = 2
    t = build_train_transform((512, 256), crop_size=(256, 256), flip_prob=0.5, photometric=False, seed=3)
    flipped = 0
    for _ in range(30):
        out = t(image=img, mask=seg)
        red = out["image"][..., 0] > out["image"][..., 2]  # RGB after normalising
        valid = out["mask"] != 255
        agree = (red == (out["mask"] == 1))[valid]
        assert agree.mean() > 0.99  # only the resampled boundary column may blend
        flipped += bool(t.transforms[2].params)  # HorizontalFlip records params only when applied
    assert 5 < flipped < 25


def test_same_seed_same_augmentations_and_steps_share_one_stream():
    img = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    seg = (np.arange(256, dtype=np.uint8)[None, :].repeat(128, 0) // 32).astype(np.uint8)
    kw = {"scale": (256, 128), "crop_size": (64, 64)}
    a, b = build_train_transform(seed=7, **kw), build_train_transform(seed=7, **kw)
    c = build_train_transform(**kw)
    outs_a = [a(image=img, mask=seg) for _ in range(5)]
    outs_b = [b(image=img, mask=seg) for _ in range(5)]
    outs_c = [c(image=img, mask=seg) for _ in range(5)]
    assert all(np.array_equal(x["image"], y["image"]) for x, y in zip(outs_a, outs_b, strict=True))
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(outs_a, outs_c, strict=True))
    # albumentations 2.0.8's Compose(seed=) would give each step its own identically seeded generator
    assert all(step.random_generator is a.random_generator for step in a.transforms)


def test_train_pipeline_output_types():
    img = np.random.default_rng(0).integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    seg = np.random.default_rng(1).integers(0, 19, (1024, 2048), dtype=np.uint8)
    out = build_train_transform(seed=0)(image=img, mask=seg)
    assert out["image"].shape == (1024, 1024, 3) and out["image"].dtype == np.float32
    assert out["mask"].shape == (1024, 1024) and out["mask"].dtype == np.uint8


def test_debug_overfit_switches_every_random_augmentation_off():
    """`debug=overfit` must feed the same pixels every step, or the loss cannot fall to zero."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("bisenet_pl.conf", version_base="1.3"):
        data = compose("train", overrides=["experiment=demo", "debug=overfit"]).data
    transform = build_train_transform(
        scale=data.scale,
        ratio_range=data.ratio_range,
        crop_size=[int(v) for v in data.crop_size],
        cat_max_ratio=data.cat_max_ratio,
        flip_prob=data.flip_prob,
        photometric=data.photometric,
        seed=0,
    )
    rng = np.random.default_rng(0)
    h, w = int(data.scale[1]) // 2, int(data.scale[0]) // 2  # a frame of the box's aspect, half its size
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (h, w), dtype=np.uint8)
    outs = [transform(image=image, mask=label) for _ in range(4)]
    assert all(np.array_equal(o["image"], outs[0]["image"]) for o in outs)
    assert all(np.array_equal(o["mask"], outs[0]["mask"]) for o in outs)
    assert outs[0]["image"].shape[:2] == (int(data.scale[1]), int(data.scale[0]))  # whole frame, resized
