"""Segmentor.fuse(): BN folded into convs, outputs unchanged (docs/reproduction.md#init contract 6)."""

from __future__ import annotations

import copy

import pytest
import torch
from _shared import randomize_bn
from torch import nn

from bisenet_pl.models import Segmentor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained_like() -> Segmentor:
    """A small-class model with non-trivial BN statistics and logits of order 1."""
    torch.manual_seed(0)
    m = Segmentor()
    randomize_bn(m, seed=1)
    # then a few train-mode forwards move the running stats like real training does
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(2, 3, 64, 96))
    return m.eval()


@pytest.mark.parametrize("shape", [(2, 3, 96, 160), (1, 3, 75, 131)])
def test_fused_outputs_equal_unfused(trained_like: Segmentor, shape: tuple[int, ...]) -> None:
    fused = copy.deepcopy(trained_like)
    assert fused.fuse() is fused
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = trained_like.eval()(x)
        out = fused(x)
        ref_low, out_low = trained_like.forward_logits(x), fused.forward_logits(x)
        ref_feats, out_feats = trained_like.backbone(x), fused.backbone(x)
        ref_aux = [h(f) for h, f in zip(trained_like.aux_heads, ref_feats[1:], strict=True)]
        out_aux = [h(f) for h, f in zip(fused.aux_heads, out_feats[1:], strict=True)]
    assert ref.shape == out.shape == (shape[0], 19, *shape[2:])
    assert ref.abs().max() > 0.5  # logits of order 1, so 1e-4 is a real bound
    assert (ref - out).abs().max() < 1e-4
    assert (ref_low - out_low).abs().max() < 1e-4
    for a, b in zip(ref_aux, out_aux, strict=True):  # aux heads are kept and fused too
        assert (a - b).abs().max() < 1e-4


def test_fuse_removes_every_batchnorm(trained_like: Segmentor) -> None:
    fused = copy.deepcopy(trained_like).fuse()
    assert fused.is_fused and not trained_like.is_fused
    assert not fused.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not any(".bn." in k or "running_" in k for k in fused.state_dict())
    assert isinstance(fused.backbone.semantic.stage4_CEBlock.gap[1], nn.Identity)
    assert fused.backbone.semantic.stage4_CEBlock.conv_gap.conv.bias is not None
    assert len(fused.aux_heads) == 4
    n_before = sum(isinstance(m, nn.Conv2d) for m in trained_like.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in fused.modules()) == n_before
    assert fused.fuse() is fused and fused.is_fused  # idempotent


def test_fuse_is_not_trivially_equal() -> None:
    """Guard: folding with the wrong statistics (batch instead of running) would be caught."""
    torch.manual_seed(2)
    m = Segmentor(aux_heads=False)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_var.fill_(4.0)
    m.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        fused = copy.deepcopy(m).fuse()(x)
        train_mode = copy.deepcopy(m).train()
        batch_stats = train_mode.forward_logits(torch.cat([x, x]))[:1]
    assert (fused - ref).abs().max() < 1e-4
    assert (m.resize(batch_stats, x.shape[2:]) - ref).abs().max() > 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fuse_on_cuda(trained_like: Segmentor) -> None:
    model = copy.deepcopy(trained_like).cuda().eval()
    x = torch.randn(1, 3, 96, 160, device="cuda")
    with torch.no_grad():
        ref = model(x)
        out = model.fuse()(x)
    assert out.device.type == "cuda"
    assert (ref - out).abs().max() < 1e-3  # TF32 convs on Ampere+ are less exact than fp32 on CPU
