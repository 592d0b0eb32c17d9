"""The one inference path: whole, slide and ms+flip behave as mmseg's, and agree where they must."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bisenet_pl.data.cityscapes import MEAN, STD
from bisenet_pl.data.preprocess import normalize
from bisenet_pl.inference.modes import (
    MS_SCALES,
    InferenceConfig,
    predict_labels,
    rescaled_size,
    resize_normalised,
    segment,
)


def pointwise_net(seed: int = 0) -> torch.nn.Module:
    """A 1x1 conv: each pixel's logits depend on that pixel only (flip- and window-equivariant)."""
    torch.manual_seed(seed)
    return torch.nn.Conv2d(3, 19, 1).eval()


def image(h: int = 37, w: int = 53, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    bgr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return torch.from_numpy(normalize(bgr, bgr=True)).permute(2, 0, 1)[None]


def test_whole_returns_logits_resized_to_the_original_size():
    net = pointwise_net()
    x = image()
    scores = segment(net, x, (74, 106), InferenceConfig())
    expected = torch.nn.functional.interpolate(net(x), size=(74, 106), mode="bilinear", align_corners=False)
    assert torch.allclose(scores, expected)


def test_slide_with_one_window_equals_whole():
    net, x = pointwise_net(), image()
    whole = segment(net, x, None, InferenceConfig())
    slide = segment(net, x, None, InferenceConfig(mode="slide", crop_size=(64, 64), stride=(48, 48)))
    assert torch.equal(slide, whole)


def test_slide_with_overlapping_windows_averages_logits():
    """A pointwise net gives the same logits in every window, so the average equals whole exactly;
    the window grid follows mmseg's (last window moved back inside the image)."""
    net, x = pointwise_net(), image(37, 53)
    calls: list[tuple[int, int]] = []

    def spy(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape[-2:]))
        return net(t)

    slide = segment(spy, x, None, InferenceConfig(mode="slide", crop_size=(16, 24), stride=(12, 16)))
    # h_grids = ceil((37 - 16) / 12) + 1 = 3, w_grids = ceil((53 - 24) / 16) + 1 = 3
    assert calls == [(16, 24)] * 9
    assert torch.allclose(slide, net(x), atol=1e-6)


def test_msflip_on_a_model_that_ignores_scale_equals_whole():
    """A net whose logits are one vector per image (from the mean colour) is blind to scale and flip:
    12 passes of soft-maxed, averaged scores give exactly whole's labels."""

    def global_net(t: torch.Tensor) -> torch.Tensor:
        v = torch.stack([t.mean(dim=(2, 3)).sum(1) * k for k in torch.linspace(-1, 1, 19)], dim=1)
        return v[:, :, None, None].expand(-1, -1, *t.shape[-2:])

    x = image(64, 96)
    whole = predict_labels(global_net, x, None, InferenceConfig())
    ms = predict_labels(global_net, x, None, InferenceConfig.from_mode("msflip"))
    assert torch.equal(ms, whole)


def test_msflip_is_twelve_softmaxed_passes_averaged():
    net, x = pointwise_net(), image(40, 60)
    sizes: list[tuple[int, int]] = []

    def spy(t: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(t.shape[-2:]))
        return net(t)

    cfg = InferenceConfig.from_mode("msflip", box=None)  # ratios of the given image (no test box)
    scores = segment(spy, x, (40, 60), cfg)
    assert cfg.scales == MS_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and cfg.flip
    assert sizes == [rescaled_size(40, 60, r) for r in MS_SCALES for _ in range(2)]
    assert torch.allclose(scores.sum(1), torch.ones(1, 40, 60), atol=1e-5)  # mean of probabilities
    # by hand: the average of the 12 soft-maxed passes
    total = torch.zeros(1, 19, 40, 60)
    for r in MS_SCALES:
        xr = resize_normalised(x, rescaled_size(40, 60, r), MEAN, STD)
        for flip in (False, True):
            logits = net(xr.flip(-1)).flip(-1) if flip else net(xr)
            up = torch.nn.functional.interpolate(logits, size=(40, 60), mode="bilinear", align_corners=False)
            total += up.softmax(1)
    assert torch.allclose(scores, total / 12, atol=1e-6)


def test_flip_pass_of_a_flip_equivariant_net_changes_nothing():
    net, x = pointwise_net(), image()
    plain = segment(net, x, None, InferenceConfig()).softmax(1)
    flipped = segment(net, x, None, InferenceConfig(flip=True, box=None))
    assert torch.allclose(flipped, plain, atol=1e-6)


def test_rescale_uses_cv2_on_the_uint8_image_like_mmcv():
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    x = torch.from_numpy(normalize(bgr, bgr=True)).permute(2, 0, 1)[None]
    size = rescaled_size(30, 50, 1.75)
    assert size == (53, 88)  # int(x * r + 0.5)
    expected = normalize(cv2.resize(bgr, (88, 53), interpolation=cv2.INTER_LINEAR), bgr=True)
    got = resize_normalised(x, size, MEAN, STD)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(got, expected)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="whole"):
        InferenceConfig(mode="sliding")
