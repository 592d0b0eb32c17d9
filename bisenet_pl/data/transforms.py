"""mmseg's Cityscapes pipelines (docs/reproduction.md#augmentation, #test-time) as albumentations 2.0.x
transforms.

albumentations has no exact counterpart of three mmseg steps (docs/libraries.md): the resize to an *absolute*
scale box times a random ratio, the crop with the class-ratio retry rule, and PhotoMetricDistortion with
multiplicative saturation and uint8 truncation after every step. They are written here as small
`DualTransform` / `ImageOnlyTransform` classes that draw from albumentations' own generator
(`self.random_generator`), so one seed reproduces a whole pipeline (`seed_transform`).

Input to every pipeline: `image` BGR uint8 (as cv2 decodes it, like mmseg) and `mask` uint8 trainIds.
Output: `image` RGB float32 normalised with mmseg's mean/std, `mask` uint8 (255 = ignore).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from bisenet_pl.data.cityscapes import IGNORE_INDEX, seed_transform
from bisenet_pl.data.preprocess import MEAN, STD, keep_ratio_size, normalize

__all__ = [
    "KeepRatioResize",
    "RandomResize",
    "CatMaxRandomCrop",
    "PhotoMetricDistortion",
    "NormalizeToRGB",
    "build_train_transform",
    "build_test_transform",
    "seed_transform",
]


class KeepRatioResize(A.DualTransform):
    """mmseg `Resize(scale, keep_ratio=True)`: image bilinear, label nearest (cv2, as mmcv's imresize).

    `resize_mask=False` is the test pipeline (docs/reproduction.md#test-time): there the label is loaded
    after the resize, so it
    keeps its original resolution and the prediction is resized back to it instead.
    """

    def __init__(self, scale: Sequence[int] = (2048, 1024), resize_mask: bool = True, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.scale = (int(scale[0]), int(scale[1]))
        self.resize_mask = resize_mask

    def _target_scale(self) -> tuple[int, int]:
        return self.scale

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        new_h, new_w = keep_ratio_size(height, width, self._target_scale())
        return {"new_size": (new_w, new_h)}

    def apply(self, img: np.ndarray, new_size: tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        if (img.shape[1], img.shape[0]) == new_size:
            return img
        return cv2.resize(img, new_size, interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(
        self, mask: np.ndarray, new_size: tuple[int, int] = (0, 0), **params: Any
    ) -> np.ndarray:
        if not self.resize_mask or (mask.shape[1], mask.shape[0]) == new_size:
            return mask
        return cv2.resize(mask, new_size, interpolation=cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "resize_mask")


class RandomResize(KeepRatioResize):
    """mmseg `RandomResize(scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True)`
    (docs/reproduction.md#augmentation).

    r ~ U[low, high); the target box is (int(scale[0]·r), int(scale[1]·r)); then the keep-ratio rule of
    `keep_ratio_size`. The box is absolute: a 2048x1024 image becomes about (2048r)x(1024r), and an image of
    any other size is fitted into the same box (albumentations' RandomScale is relative to the input).
    """

    def __init__(
        self,
        scale: Sequence[int] = (2048, 1024),
        ratio_range: Sequence[float] = (0.5, 2.0),
        p: float = 1.0,
    ) -> None:
        super().__init__(scale=scale, resize_mask=True, p=p)
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))

    def _target_scale(self) -> tuple[int, int]:
        low, high = self.ratio_range
        ratio = self.random_generator.random() * (high - low) + low
        return int(self.scale[0] * ratio), int(self.scale[1] * ratio)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "ratio_range")


class CatMaxRandomCrop(A.DualTransform):
    """mmseg `RandomCrop(crop_size, cat_max_ratio=0.75)` (docs/reproduction.md#augmentation).

    The offset is drawn in [0, max(H - h, 0)] (and likewise for w) and the crop is clipped to the image, so a
    smaller image is not padded here (padding comes after normalisation). A candidate is accepted when its
    label holds more than one non-ignore class and the largest covers less than `cat_max_ratio` of the
    non-ignore pixels; after `max_checks` (10) rejected candidates the next one is used unchecked.
    """

    def __init__(
        self,
        crop_size: Sequence[int] = (1024, 1024),
        cat_max_ratio: float = 0.75,
        ignore_index: int = IGNORE_INDEX,
        max_checks: int = 10,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = int(ignore_index)
        self.max_checks = int(max_checks)

    def _draw(self, height: int, width: int) -> tuple[int, int, int, int]:
        margin_h = max(height - self.crop_size[0], 0)
        margin_w = max(width - self.crop_size[1], 0)
        y1 = int(self.random_generator.integers(0, margin_h + 1))
        x1 = int(self.random_generator.integers(0, margin_w + 1))
        return y1, min(y1 + self.crop_size[0], height), x1, min(x1 + self.crop_size[1], width)

    def accepts(self, label_crop: np.ndarray) -> bool:
        """mmseg's test: >1 non-ignore class and the largest under cat_max_ratio of non-ignore pixels.

        The class counts come from OpenCV's histogram (exact integers in float32 below 2**24 pixels, several
        times faster than `np.bincount` on a crop view), else from `np.bincount`.
        """
        if label_crop.dtype == np.uint8 and label_crop.ndim == 2 and 0 < label_crop.size < 2**24:
            counts = cv2.calcHist([label_crop], [0], None, [256], [0, 256]).ravel().astype(np.int64)
        else:
            counts = np.bincount(np.asarray(label_crop).ravel(), minlength=256)
        if 0 <= self.ignore_index < counts.size:
            counts[self.ignore_index] = 0
        present = counts[counts > 0]
        return present.size > 1 and present.max() / present.sum() < self.cat_max_ratio

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        box = self._draw(height, width)
        mask = data.get("mask")
        if self.cat_max_ratio < 1.0 and mask is not None:
            for _ in range(self.max_checks):
                y1, y2, x1, x2 = box
                if self.accepts(mask[y1:y2, x1:x2]):
                    break
                box = self._draw(height, width)
        return {"box": box}

    def apply(
        self, img: np.ndarray, box: tuple[int, int, int, int] = (0, 0, 0, 0), **params: Any
    ) -> np.ndarray:
        y1, y2, x1, x2 = box
        return img[y1:y2, x1:x2]

    def apply_to_mask(
        self, mask: np.ndarray, box: tuple[int, int, int, int] = (0, 0, 0, 0), **params: Any
    ) -> np.ndarray:
        y1, y2, x1, x2 = box
        return mask[y1:y2, x1:x2]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("crop_size", "cat_max_ratio", "ignore_index", "max_checks")


_IDENTITY = np.arange(256, dtype=np.uint8)


def _one_channel_lut(channel: int, lut: np.ndarray) -> np.ndarray:
    """A (1, 256, 3) LUT applying `lut` to one channel and leaving the other two as they are."""
    table = np.repeat(_IDENTITY[:, None], 3, axis=1)
    table[:, channel] = lut
    return table.reshape(1, 256, 3)


def _affine_lut(alpha: float, beta: float) -> np.ndarray:
    """mmseg's `convert` (float32(x)·alpha + beta, clip to [0, 255], truncate to uint8) as a 256-entry LUT.

    A LUT gives exactly the same bytes as the per-pixel arithmetic (uint8 input has only 256 values) and is
    several times faster.
    """
    values = np.arange(256, dtype=np.float32) * alpha + beta
    return np.clip(values, 0, 255).astype(np.uint8)


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """mmseg `PhotoMetricDistortion` on the BGR uint8 crop (docs/reproduction.md#augmentation), every step
    truncated to uint8.

    Order: (1) brightness +U(-32, 32); (2) mode = randint(2), contrast ×U(0.5, 1.5) here when mode is 1;
    (3) saturation: S ×U(0.5, 1.5) in OpenCV's HSV; (4) hue: H + randint(-18, 18) mod 180 (delta in [-18, 17],
    numpy excludes the upper bound); (5) contrast here when mode is 0. Each step happens when randint(2) is 1.
    The draws happen in exactly that order and only when a step is on, as in mmseg.

    `input_order="rgb"` takes the same image with its channels in RGB order and returns it in RGB: OpenCV's
    RGB<->HSV conversions are its BGR ones with the channel index swapped and the LUTs act per channel, so
    the pixels are the same, without a channel swap of the frame (tests/data/test_transforms_speed.py).
    Brightness followed by the first contrast step is one LUT (their composition: the same bytes).
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
        input_order: str = "bgr",
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.input_order = _order(input_order)
        self.brightness_delta = int(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = int(hue_delta)

    def _coin(self) -> bool:
        return bool(self.random_generator.integers(2))

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator
        brightness = contrast_first = saturation = hue = contrast_last = None
        if self._coin():
            brightness = float(rng.uniform(-self.brightness_delta, self.brightness_delta))
        mode = int(rng.integers(2))
        if mode == 1 and self._coin():
            contrast_first = float(rng.uniform(*self.contrast_range))
        if self._coin():
            saturation = float(rng.uniform(*self.saturation_range))
        if self._coin():
            hue = int(rng.integers(-self.hue_delta, self.hue_delta))
        if mode == 0 and self._coin():
            contrast_last = float(rng.uniform(*self.contrast_range))
        return {
            "brightness": brightness,
            "contrast_first": contrast_first,
            "saturation": saturation,
            "hue": hue,
            "contrast_last": contrast_last,
        }

    def apply(
        self,
        img: np.ndarray,
        brightness: float | None = None,
        contrast_first: float | None = None,
        saturation: float | None = None,
        hue: int | None = None,
        contrast_last: float | None = None,
        **params: Any,
    ) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(
                f"PhotoMetricDistortion expects the uint8 BGR image (mmseg distorts before normalising), "
                f"got {img.dtype}"
            )
        to_hsv, from_hsv = (
            (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
            if self.input_order == "rgb"
            else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
        )
        lut = None if brightness is None else _affine_lut(1.0, brightness)
        if contrast_first is not None:
            contrast = _affine_lut(contrast_first, 0.0)
            lut = contrast if lut is None else contrast[lut]  # x -> contrast(brightness(x)), the same bytes
        if lut is not None:
            img = cv2.LUT(img, lut)
        if saturation is not None:  # S scaled: one LUT pass over H, S, V with H and V unchanged
            hsv = cv2.cvtColor(img, to_hsv)
            img = cv2.cvtColor(cv2.LUT(hsv, _one_channel_lut(1, _affine_lut(saturation, 0.0))), from_hsv)
        if hue is not None:
            hsv = cv2.cvtColor(img, to_hsv)
            hue_lut = ((np.arange(256) + hue) % 180).astype(np.uint8)  # H is 0..179 for uint8 images
            img = cv2.cvtColor(cv2.LUT(hsv, _one_channel_lut(0, hue_lut)), from_hsv)
        if contrast_last is not None:
            img = cv2.LUT(img, _affine_lut(contrast_last, 0.0))
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta", "input_order")


def _order(order: str) -> str:
    if order not in ("bgr", "rgb"):
        raise ValueError(f"input_order must be 'bgr' or 'rgb', got {order!r}")
    return order


def _normalize_table(order: str) -> np.ndarray:
    """`normalize`'s arithmetic for each of the 256 values of each channel, as a (1, 256, 3) float32 LUT
    whose channels follow `order`: float32(v) - float32(mean), times float32(1 / std), in float32."""
    mean = np.asarray(MEAN, dtype=np.float64).astype(np.float32)
    inv_std = (1.0 / np.asarray(STD, dtype=np.float64)).astype(np.float32)
    table = (np.arange(256, dtype=np.float32)[:, None] - mean) * inv_std  # (256, 3), RGB
    if order == "bgr":
        table = table[:, ::-1]
    return np.ascontiguousarray(table, dtype=np.float32).reshape(1, 256, 3)


def _apply_keeping_layout(
    transform: A.BasicTransform, params: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """albumentations' `apply_with_params` but for the image, which keeps the (3, H, W)-backed layout
    `NormalizeToRGB` gives it (albumentations would copy it into HWC order before and after each step)."""
    image = kwargs.pop("image", None)
    res = A.BasicTransform.apply_with_params(transform, params, *args, **kwargs)
    if image is not None:
        res["image"] = transform.apply(image, **params)
    return res


class NormalizeToRGB(A.ImageOnlyTransform):
    """mmseg's data preprocessor: BGR (or, with `input_order="rgb"`, RGB) uint8 -> RGB float32,
    (x - mean) / std with the RGB statistics (docs/reproduction.md#augmentation).

    A uint8 channel has 256 values, so `normalize`'s float32 arithmetic is done once per value and channel
    and applied as a lookup table (cv2.LUT): the same floats, bit for bit, several times faster. Each
    channel is written into its own plane of a (3, H, W) array and the result is that array seen as
    (H, W, 3): the item's CHW tensor then needs no strided copy (`make_item`'s transpose is contiguous).
    Other dtypes go through `normalize` itself.
    """

    def __init__(self, input_order: str = "bgr", p: float = 1.0) -> None:
        super().__init__(p=p)
        self.input_order = _order(input_order)
        table = _normalize_table(self.input_order)[0]  # (256, 3), channels in input order
        self._tables = [np.ascontiguousarray(table[:, c]).reshape(1, 256) for c in range(3)]

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
            return normalize(img, bgr=self.input_order == "bgr")
        out = np.empty((3, img.shape[0], img.shape[1]), dtype=np.float32)
        for c, plane in enumerate(cv2.split(img)):
            rgb = c if self.input_order == "rgb" else 2 - c
            written = cv2.LUT(plane, self._tables[c], dst=out[rgb])
            if not np.shares_memory(written, out[rgb]):  # OpenCV may allocate instead of writing into dst
                out[rgb] = written
        return out.transpose(1, 2, 0)

    def apply_with_params(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _apply_keeping_layout(self, params, args, kwargs)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("input_order",)


class PadIfNeeded(A.PadIfNeeded):
    """albumentations' `PadIfNeeded` (same parameters, same draws, same pixels) that keeps the image in the
    (3, H, W) memory `NormalizeToRGB` writes: nothing is copied when no padding is needed, and a padded
    image is written straight into CHW memory, so the item's tensor needs no strided copy. Other border
    modes, fills and layouts are albumentations' own."""

    def apply(
        self,
        img: np.ndarray,
        pad_top: int = 0,
        pad_bottom: int = 0,
        pad_left: int = 0,
        pad_right: int = 0,
        **params: Any,
    ) -> np.ndarray:
        fill = self.fill
        if (
            img.ndim != 3
            or self.border_mode != cv2.BORDER_CONSTANT
            or not isinstance(fill, int | float)
            or img.dtype != np.float32
        ):
            return super().apply(img, pad_top, pad_bottom, pad_left, pad_right, **params)
        if pad_top == pad_bottom == pad_left == pad_right == 0:
            return img
        h, w, c = img.shape
        out = np.empty((c, h + pad_top + pad_bottom, w + pad_left + pad_right), dtype=img.dtype)
        out.fill(fill)
        out[:, pad_top : pad_top + h, pad_left : pad_left + w] = img.transpose(2, 0, 1)
        return out.transpose(1, 2, 0)

    def apply_with_params(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _apply_keeping_layout(self, params, args, kwargs)


def build_train_transform(
    scale: Sequence[int] = (2048, 1024),
    ratio_range: Sequence[float] = (0.5, 2.0),
    crop_size: Sequence[int] = (1024, 1024),
    cat_max_ratio: float = 0.75,
    flip_prob: float = 0.5,
    photometric: bool = True,
    seed: int | Sequence[int] | None = None,
    input_order: str = "bgr",
) -> A.Compose:
    """mmseg's cityscapes_1024x1024 training pipeline (docs/reproduction.md#augmentation), step for step.

    RandomResize -> CatMaxRandomCrop -> HorizontalFlip -> PhotoMetricDistortion (BGR uint8) ->
    NormalizeToRGB -> pad bottom/right to `crop_size` with image 0 (after normalising) and label 255.
    `crop_size` is (h, w); `scale` is (long, short) edge as mmseg writes it, e.g. (2048, 1024).
    `input_order="rgb"` takes the frame in RGB order (as the PNG decoder gives it) and gives the same output,
    bit for bit, without swapping the frame's channels; the pipeline's `input_order` attribute says which
    order it takes (the dataset reads it).
    """
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
    steps: list[A.BasicTransform] = [
        RandomResize(scale=scale, ratio_range=ratio_range),
        CatMaxRandomCrop(crop_size=(crop_h, crop_w), cat_max_ratio=cat_max_ratio),
        A.HorizontalFlip(p=flip_prob),
    ]
    if photometric:
        steps.append(PhotoMetricDistortion(input_order=input_order))
    steps += [
        NormalizeToRGB(input_order=input_order),
        PadIfNeeded(
            min_height=crop_h,
            min_width=crop_w,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=IGNORE_INDEX,
        ),
    ]
    pipeline = A.Compose(steps)
    pipeline.input_order = _order(input_order)
    seed_transform(pipeline, seed)
    return pipeline


def build_test_transform(scale: Sequence[int] = (2048, 1024), input_order: str = "bgr") -> A.Compose:
    """mmseg's test pipeline (docs/reproduction.md#test-time): keep-ratio resize of the image into `scale`,
    then normalise.

    The label (if given as `mask`) is left at its original resolution, and nothing is padded.
    """
    pipeline = A.Compose(
        [KeepRatioResize(scale=scale, resize_mask=False), NormalizeToRGB(input_order=input_order)]
    )
    pipeline.input_order = _order(input_order)
    return pipeline
