"""The one inference path: whole-image, sliding-window and multi-scale + flip, as mmseg runs them.

Validation, test, evaluate, predict, benchmark and the ONNX backend all call `segment`, so a number
measured in one is the number of the others (docs/architecture.md). `net` is any callable mapping a normalised
image batch (N,3,H,W) to logits at the same H,W: a `Segmentor` in eval mode (whose forward already does
mmseg's first bilinear resize from 1/8 to the input size) or an ONNX Runtime session wrapper.

What mmseg does (docs/reproduction.md#test-time), and therefore what we do:
- `whole`: one pass over the image, logits resized (bilinear, align_corners=False) to the original
  label size.
- `slide`: windows of `crop_size` every `stride`, the last window of each row/column moved back inside
  the image, window logits summed into place and divided by the per-pixel window count (v0.x
  `slide_inference`), then resized to the original size.
- ms + flip (`scales`, `flip`): each pass's image is the test image rescaled by a ratio (keep-ratio,
  sizes `int(x * r + 0.5)`, cv2 bilinear on the uint8 image as mmcv's `imrescale` does), optionally
  flipped; its scores are un-flipped, resized to the original size and soft-maxed; the probability
  maps are averaged (v0.x `aug_test`). A single pass (one scale 1.0, no flip) returns logits instead of
  probabilities: the argmax is the same and the logits are what the ONNX and fused paths are checked on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F

from bisenet_pl.data.preprocess import (
    CITYSCAPES_BOX,
    MEAN,
    STD,
    denormalize,
    normalize,
    preprocess,
    ratio_box,
    resize_image,
)
from bisenet_pl.deploy.runtime.base import Net, low_res_logits, returns_labels
from bisenet_pl.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class InferenceConfig:
    """How to turn a network into per-pixel scores; the defaults are mmseg's Cityscapes test setting."""

    mode: str = "whole"  # "whole" or "slide"
    crop_size: tuple[int, int] = (1024, 1024)  # (h, w), slide only
    stride: tuple[int, int] = (768, 768)  # (h, w), slide only
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    #: The test resize box (long, short edge). An ms+flip pass of ratio r resizes the *original* image
    #: into the box (int(long * r), int(short * r)), keeping its aspect ratio, as mmseg v0.x does;
    #: None: the ratio scales the image as given.
    box: tuple[int, int] | None = CITYSCAPES_BOX
    mean: tuple[float, float, float] = field(default=MEAN)
    std: tuple[float, float, float] = field(default=STD)

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise ValueError(
                f"inference mode must be 'whole' or 'slide' (msflip = scales + flip), got {self.mode!r}"
            )
        # Configs hand over lists (of two ints: the dataclass's contract).
        self.crop_size = cast("tuple[int, int]", tuple(int(v) for v in self.crop_size))
        self.stride = cast("tuple[int, int]", tuple(int(v) for v in self.stride))
        self.scales = tuple(float(s) for s in self.scales)
        if self.box is not None:
            self.box = (int(self.box[0]), int(self.box[1]))
        if not self.scales:
            raise ValueError("inference needs at least one scale")

    def warn_if_slide_is_whole(self) -> bool:
        """`slide` with windows at least as large as the test box is one window, i.e. `whole`: say so
        (a demo checkpoint's 256-pixel frames under the default 1024x1024 crop). Returns whether it is."""
        if self.mode != "slide" or self.box is None:
            return False
        long_edge, short_edge = self.box
        if self.crop_size[0] >= short_edge and self.crop_size[1] >= long_edge:
            log.warning(
                "mode=slide: the %dx%d window covers the whole %dx%d test image, so this equals mode=whole; "
                "set inference.crop_size=[h,w] (and inference.stride) smaller than the image to slide",
                *self.crop_size, short_edge, long_edge,
            )  # fmt: skip
            return True
        return False

    @property
    def is_multi_pass(self) -> bool:
        return self.flip or self.scales != (1.0,)

    @classmethod
    def from_mode(cls, mode: str, **overrides) -> InferenceConfig:
        """`whole`, `slide` or `msflip` (mmseg's 6 ratios x flip, whole-image passes), plus overrides.

        `msflip` with sliding windows: `InferenceConfig(mode="slide", scales=MS_SCALES, flip=True)`.
        """
        if mode == "msflip":
            overrides.setdefault("scales", MS_SCALES)
            overrides.setdefault("flip", True)
            return cls(mode=overrides.pop("window", "whole"), **overrides)
        return cls(mode=mode, **overrides)


#: mmseg's Cityscapes TTA ratios (docs/reproduction.md#test-time).
MS_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def rescaled_size(height: int, width: int, ratio: float) -> tuple[int, int]:
    """mmcv `rescale_size` with a scale factor: `int(x * r + 0.5)` per side."""
    return int(height * ratio + 0.5), int(width * ratio + 0.5)


def resize_normalised(
    image: torch.Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Resize a normalised batch as mmseg resizes the uint8 image before normalising it.

    mmseg rescales the decoded uint8 image with cv2 bilinear (fixed-point, rounded to uint8) and only then
    normalises. Resizing the float tensor instead would differ by up to one grey level per pixel, so we
    undo the normalisation (exact: the values came from uint8), resize with cv2, and normalise again.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = [
        torch.from_numpy(normalize(resize_image(rgb, size), mean, std))
        for rgb in denormalize(image, mean, std)
    ]
    return torch.stack(out).permute(0, 3, 1, 2).contiguous().to(image.device, image.dtype)


def _slide(net: Net, image: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """v0.x `slide_inference`: overlapping windows, logits averaged where they overlap."""
    n, _, h, w = image.shape
    h_crop, w_crop = crop
    h_stride, w_stride = stride
    h_grids = max(h - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w - w_crop + w_stride - 1, 0) // w_stride + 1
    scores: torch.Tensor | None = None
    count = torch.zeros((1, 1, h, w), device=image.device, dtype=torch.float32)
    for hi in range(h_grids):
        for wi in range(w_grids):
            y2 = min(hi * h_stride + h_crop, h)
            x2 = min(wi * w_stride + w_crop, w)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            logits = net(image[:, :, y1:y2, x1:x2]).float()
            if scores is None:
                scores = torch.zeros((n, logits.shape[1], h, w), device=image.device, dtype=torch.float32)
            scores[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    assert scores is not None
    return scores / count


def _one_pass(net: Net, image: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
    if cfg.mode == "slide":
        return _slide(net, image, cfg.crop_size, cfg.stride)
    return net(image).float()


def _hw(size: Sequence[int]) -> tuple[int, int]:
    """`size` (an (H, W) pair or a tensor's `shape[-2:]`) as a tuple, typed as the pair it is."""
    return cast("tuple[int, int]", tuple(size))


def resize_scores(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, align_corners=False: mmseg's resize to the original image size."""
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def _pass_input(
    image: torch.Tensor, original: torch.Tensor | None, ratio: float, cfg: InferenceConfig
) -> torch.Tensor:
    """The normalised input of one ms+flip pass: the original uint8 image resized once into the ratio's
    box (mmseg v0.x), or, without a box or an original, the given image rescaled by the ratio."""
    if original is not None and cfg.box is not None:
        box = ratio_box(cfg.box, ratio)
        rgbs = original.cpu().numpy()
        batch = [preprocess(rgb, box, cfg.mean, cfg.std) for rgb in rgbs]
        return torch.cat(batch).to(image.device, image.dtype)
    h, w = image.shape[-2:]
    return resize_normalised(image, rescaled_size(h, w, ratio), cfg.mean, cfg.std)


@torch.no_grad()
def segment(
    net: Net,
    image: torch.Tensor,
    ori_size: tuple[int, int] | None = None,
    cfg: InferenceConfig | None = None,
    original: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pixel class scores (N,C,h,w) at `ori_size` (default: the image's own size).

    Single pass: logits. Several passes (ratios and/or flip): the mean of the soft-maxed passes. For
    ms+flip give `original`, the (N, H, W, 3) RGB uint8 image before the test resize: each ratio's input
    is then resized from it once, into that ratio's box (docs/reproduction.md#test-time). Without it the
    test-scale `image` is rescaled, which is the same only where the test resize was the identity (a
    2048x1024 Cityscapes frame).
    """
    cfg = cfg or InferenceConfig()
    size = _hw(ori_size if ori_size is not None else image.shape[-2:])
    if not cfg.is_multi_pass:
        return resize_scores(_one_pass(net, image, cfg), size)
    if original is None and tuple(image.shape[-2:]) == size:
        # No test resize happened, so the image is the original: recover its uint8 pixels exactly.
        original = torch.from_numpy(denormalize(image, cfg.mean, cfg.std))
    total: torch.Tensor | None = None
    passes = 0
    for ratio in cfg.scales:
        scaled = _pass_input(image, original, ratio, cfg)
        for flipped in (False, True) if cfg.flip else (False,):
            x = scaled.flip(-1) if flipped else scaled
            scores = _one_pass(net, x, cfg)
            if flipped:
                scores = scores.flip(-1)
            probs = resize_scores(scores, size).softmax(dim=1)
            total = probs if total is None else total.add_(probs)
            passes += 1
    assert total is not None
    return total.div_(passes)


@torch.no_grad()
def predict_labels(
    net: Net,
    image: torch.Tensor,
    ori_size: tuple[int, int] | None = None,
    cfg: InferenceConfig | None = None,
    fast_argmax: bool = False,
    original: torch.Tensor | None = None,
) -> torch.Tensor:
    """Train-id map (N,h,w) int64: the argmax of `segment` (`original`: see there).

    `fast_argmax=True` (opt-in, same labels): when the upsample + argmax is a single bilinear resize of
    the 1/8 logits, i.e. one `whole` pass with the image already at `ori_size` and a `net` that exposes
    `forward_logits` (a `Segmentor`, a `FastNet` or a `LowResOnnxNet`), the labels come from
    `bisenet_pl.inference.argmax.upsample_argmax`, which interpolates only at class boundaries. It equals
    `segment(...).argmax(1)` up to exact ties. Any other case (slide, multi-scale/flip, a resized image,
    an ONNX net) takes the full path.
    """
    cfg = cfg or InferenceConfig()
    size = _hw(ori_size if ori_size is not None else image.shape[-2:])
    forward_logits = low_res_logits(net)
    if (
        fast_argmax
        and forward_logits is not None
        and cfg.mode == "whole"
        and not cfg.is_multi_pass
        and size == tuple(image.shape[-2:])
    ):
        from bisenet_pl.inference.argmax import upsample_argmax

        return upsample_argmax(forward_logits(image), size, bool(getattr(net, "align_corners", False)))
    return segment(net, image, ori_size, cfg, original).argmax(dim=1)


def require_logits(net: Net, cfg: InferenceConfig, source: object = None) -> None:
    """One readable error when a labels graph (an export with argmax=true) meets a mode that averages
    logits or probabilities (slide, ms+flip)."""
    if not returns_labels(net) or (cfg.mode == "whole" and not cfg.is_multi_pass):
        return
    mode = "slide" if cfg.mode == "slide" else "ms+flip"
    where = source or getattr(net, "path", None) or "this ONNX file"
    raise ConfigError(
        f"{where} was exported with argmax=true: it returns class labels, and mode={mode} averages logits "
        f"over {'windows' if mode == 'slide' else 'scales and flips'}. Use mode=whole, or export without "
        "argmax=true for this mode."
    )
