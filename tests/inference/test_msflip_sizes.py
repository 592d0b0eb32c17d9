"""ms+flip at image sizes other than Cityscapes': one resize per ratio, from the original image, into
the box (int(2048 r), int(1024 r)), as mmseg v0.x's multi-scale test does."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bisenet_pl.data.preprocess import MEAN, STD
from bisenet_pl.inference.modes import MS_SCALES, InferenceConfig
from bisenet_pl.inference.predictor import Predictor
from bisenet_pl.models import Segmentor


def _v0x_box_size(h: int, w: int, ratio: float) -> tuple[int, int]:
    """Written from mmseg v0.x's rule, independently of the package: box = (int(2048 r), int(1024 r)),
    keep-ratio factor = min(long box / long edge, short box / short edge), sides int(x f + 0.5)."""
    long_box, short_box = int(2048 * ratio), int(1024 * ratio)
    f = min(long_box / max(h, w), short_box / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


@torch.no_grad()
def _reference(net, rgb: np.ndarray) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The one-resize ms+flip, by hand: cv2-resize the original into each box, normalise, 2 passes."""
    h, w = rgb.shape[:2]
    total, sizes = None, []
    for r in MS_SCALES:
        th, tw = _v0x_box_size(h, w, r)
        resized = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_LINEAR)
        x = (resized.astype(np.float32) - np.array(MEAN)) / np.array(STD)
        x = torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]
        for flip in (False, True):
            sizes.append((th, tw))
            inp = x.flip(-1) if flip else x
            out = net(inp)
            out = out.flip(-1) if flip else out
            probs = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False).softmax(1)
            total = probs if total is None else total + probs
    return total / (2 * len(MS_SCALES)), sizes


def _tiny() -> Segmentor:
    """BiSeNetV2's structure at a few channels: the ms+flip boxes reach 1792x3185 pixels."""
    torch.manual_seed(0)
    return Segmentor(
        aux_heads=False,
        detail_channels=(8, 8, 16),
        semantic_channels=(8, 16, 16, 16),
        bga_channels=16,
        decode_channels=16,
    ).eval()


class _Spy(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.sizes = net, []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.net(x)


@pytest.mark.parametrize("hw", [(375, 500)])  # 720x1280 at r=0.5: the test below
def test_msflip_resizes_the_original_once_per_ratio(hw: tuple[int, int]) -> None:
    model = _tiny()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    spy = _Spy(model)
    predictor = Predictor(spy, mode="msflip", test_scale=(2048, 1024))
    scores = predictor.scores(rgb)
    ref, ref_sizes = _reference(model, rgb)
    assert spy.sizes == ref_sizes  # e.g. 720x1280 at r=0.5: 576x1024, not a rescaled 1152x2048 image
    # cv2 on the same uint8 pixels and the same float arithmetic up to normalisation order: tiny.
    assert (scores - ref).abs().max() < 1e-5
    assert torch.equal(scores.argmax(1), ref.argmax(1))


def test_the_old_two_resize_path_differs_on_a_non_cityscapes_size() -> None:
    """The regression this guards: rescaling the test-scale image (two interpolations) instead."""
    from bisenet_pl.inference.modes import _pass_input

    rgb = np.random.default_rng(1).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    predictor = Predictor(_tiny(), mode="msflip", test_scale=(2048, 1024))
    x, size, original = predictor._prepare(rgb)
    one = _pass_input(x, original, 0.5, predictor.cfg)
    two = _pass_input(x, None, 0.5, InferenceConfig.from_mode("msflip", box=None))
    h, w = _v0x_box_size(720, 1280, 0.5)
    expected = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    expected = (expected.astype(np.float32) - np.array(MEAN)) / np.array(STD)
    assert tuple(one.shape[-2:]) == (h, w) == (512, 910)
    assert np.abs(one[0].permute(1, 2, 0).numpy() - expected).max() < 1e-5
    # the old path: the 1024x1820 test-scale image rescaled again: same size here, other pixels
    assert tuple(two.shape[-2:]) == (512, 910)
    assert float((two - one).abs().max()) > 0.5
