"""Loss, OHEM and the multi-head sum against literal references written from docs/reproduction.md#loss"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bisenet_pl.training.losses import HEAD_NAMES, MultiHeadLoss, cross_entropy_all_pixels, ohem_weights

IGN = 255


def _case(
    n: int = 2,
    c: int = 19,
    h: int = 24,
    w: int = 32,
    ignore_frac: float = 0.1,
    scale: float = 2.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g) * scale
    label = torch.randint(0, c, (n, h, w), generator=g)
    label[torch.rand(n, h, w, generator=g) < ignore_frac] = IGN
    return logits, label


def _ce_reference(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    """Literal loop: -log softmax(x)[y] per pixel (0 for 255), times weight, summed / (N·H·W), in float64."""
    x = logits.double().numpy()
    y = label.numpy()
    wt = None if weight is None else weight.double().numpy()
    n, _, h, w = x.shape
    total = 0.0
    for b in range(n):
        for i in range(h):
            for j in range(w):
                if y[b, i, j] == IGN:
                    continue
                v = x[b, :, i, j]
                m = v.max()
                lse = m + np.log(np.exp(v - m).sum())
                pix = lse - v[y[b, i, j]]
                total += pix * (1.0 if wt is None else wt[b, i, j])
    return total / (n * h * w)


# ----------------------------------------------------------------------------------------------- CE


def test_ce_divides_by_all_pixels() -> None:
    logits, label = _case()
    ours = cross_entropy_all_pixels(logits, label)
    assert ours.dtype == torch.float32
    assert 0.07 < (label == IGN).float().mean() < 0.13  # the "10% at 255" case of docs/reproduction.md#loss
    assert ours.item() == pytest.approx(_ce_reference(logits, label), rel=1e-5)
    # PyTorch's default mean divides by the non-ignored count: a different, larger number
    # (docs/reproduction.md#loss).
    torch_mean = F.cross_entropy(logits, label, ignore_index=IGN)
    assert torch_mean.item() > ours.item() * 1.05
    n_valid = (label != IGN).sum().item()
    assert ours.item() == pytest.approx(torch_mean.item() * n_valid / label.numel(), rel=1e-6)


def test_ce_with_weight_and_all_ignored() -> None:
    logits, label = _case(seed=1)
    weight = (torch.rand(label.shape, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    ours = cross_entropy_all_pixels(logits, label, weight=weight)
    assert ours.item() == pytest.approx(_ce_reference(logits, label, weight), rel=1e-5)
    assert cross_entropy_all_pixels(logits, torch.full_like(label, IGN)).item() == 0.0


def test_ce_shape_mismatch_raises() -> None:
    logits, label = _case()
    with pytest.raises(ValueError, match="upsample"):
        cross_entropy_all_pixels(logits[..., :-1], label)


def test_ce_fp32_under_autocast() -> None:
    logits, label = _case()
    lb = logits.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cross_entropy_all_pixels(lb, label)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_ce_reference(lb.detach().float(), label), rel=1e-5)
    loss.backward()
    assert lb.grad is not None and lb.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------- OHEM


def _ohem_reference(
    logits: torch.Tensor, label: torch.Tensor, thresh: float | None, min_kept: int
) -> np.ndarray:
    """docs/reproduction.md#ohem, step by step, with numpy. Probabilities/losses come from torch
    (bit-identical inputs);
    the selection logic (sort, index, max, strict <, top-k) is the part under test."""
    n = label.shape[0]
    batch_kept = min_kept * n
    y = label.numpy()
    valid = y != IGN
    weight = np.zeros(y.shape, dtype=np.float32)
    if thresh is not None:
        tmp = y.copy()
        tmp[tmp == IGN] = 0
        prob = (
            torch.softmax(logits.float(), dim=1)
            .gather(1, torch.from_numpy(tmp).long()[:, None])[:, 0]
            .numpy()
        )
        valid_prob = prob[valid]
        sort_prob = np.sort(valid_prob)  # ascending
        min_threshold = sort_prob[min(batch_kept, sort_prob.size - 1)] if sort_prob.size > 0 else 0.0
        threshold = max(min_threshold, thresh)
        vw = np.zeros(valid_prob.shape, dtype=np.float32)
        for i, p in enumerate(valid_prob):
            if p < threshold:
                vw[i] = 1.0
        weight[valid] = vw
    else:
        losses = F.cross_entropy(logits.float(), label, reduction="none", ignore_index=IGN).numpy()
        vl = losses[valid]
        order = np.argsort(-vl, kind="stable")  # descending, ties in index order
        vw = np.zeros(vl.shape, dtype=np.float32)
        vw[order[:batch_kept]] = 1.0
        weight[valid] = vw
    return weight


def _tied_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits drawn from 3 fixed pixel vectors: many pixels share exactly the same probability/loss."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(3, 5, generator=g) * 2
    idx = torch.randint(0, 3, (2, 10, 12), generator=g)
    logits = protos[idx].permute(0, 3, 1, 2).contiguous()
    label = torch.randint(0, 2, (2, 10, 12), generator=g)
    label[torch.rand(2, 10, 12, generator=g) < 0.2] = IGN
    return logits, label


@pytest.mark.parametrize("thresh", [0.7, None])
@pytest.mark.parametrize("min_kept", [0, 1, 37, 200, 10000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ohem_matches_reference(thresh: float | None, min_kept: int, seed: int) -> None:
    for logits, label in (_case(seed=seed, scale=3.0), _tied_case(seed)):
        got = ohem_weights(logits, label, thresh, min_kept)
        ref = _ohem_reference(logits, label, thresh, min_kept)
        assert got.dtype == torch.float32 and got.shape == label.shape
        np.testing.assert_array_equal(got.numpy(), ref)
        assert (got[label == IGN] == 0).all()


def test_ohem_ties_at_threshold_are_all_dropped() -> None:
    logits, label = _tied_case(4)
    # thresh 0 -> threshold is exactly the tied value at the cut; strict "<" drops every pixel equal to it.
    w = ohem_weights(logits, label, thresh=0.0, min_kept=5)
    p = torch.softmax(logits, 1).gather(1, label.masked_fill(label == IGN, 0)[:, None])[:, 0]
    cut = p[label != IGN].sort().values[10]
    assert torch.equal(w.bool(), (p < cut) & (label != IGN))
    assert ((p == cut) & (label != IGN)).sum() > 1  # really a tie
    np.testing.assert_array_equal(w.numpy(), _ohem_reference(logits, label, 0.0, 5))


def test_ohem_no_valid_pixels() -> None:
    logits, label = _case()
    label = torch.full_like(label, IGN)
    for thresh in (0.7, None):
        w = ohem_weights(logits, label, thresh, 10000)
        assert w.shape == label.shape and w.sum() == 0
    assert cross_entropy_all_pixels(logits, label, ohem_weights(logits, label, 0.7, 10)).item() == 0.0


def test_ohem_batch_kept_exceeds_valid_keeps_all_but_max() -> None:
    # 14,682 valid pixels, min_kept 20000: threshold = max prob (> 0.7), all but the max kept
    # (docs/reproduction.md#ohem).
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 19, 128, 128, generator=g) * 3
    label = torch.randint(0, 19, (1, 128, 128), generator=g)
    flat = label.view(-1)
    flat[torch.randperm(flat.numel(), generator=g)[: 128 * 128 - 14682]] = IGN
    logits[0, label[0, 5, 5].item(), 5, 5] = 50.0 if label[0, 5, 5] != IGN else 0.0
    valid = label != IGN
    assert valid.sum() == 14682
    p = torch.softmax(logits, 1).gather(1, label.masked_fill(~valid, 0)[:, None])[:, 0]
    assert p[valid].max() > 0.7 and (p[valid] == p[valid].max()).sum() == 1
    w = ohem_weights(logits, label, thresh=0.7, min_kept=20000)
    assert int(w.sum()) == 14681
    # Same situation with every prob below thresh: thresh dominates and all valid pixels are kept.
    w2 = ohem_weights(torch.zeros_like(logits), label, thresh=0.7, min_kept=20000)
    assert int(w2.sum()) == 14682


def test_ohem_threshold_dominated_by_thresh_or_min_kept() -> None:
    logits, label = _case(n=2, h=40, w=40, scale=4.0, seed=5)
    valid = label != IGN
    p = torch.softmax(logits, 1).gather(1, label.masked_fill(~valid, 0)[:, None])[:, 0]
    n_below = int(((p < 0.7) & valid).sum())
    # min_kept small: thresh dominates, exactly the pixels with p < 0.7 are kept.
    w = ohem_weights(logits, label, thresh=0.7, min_kept=10)
    assert int(w.sum()) == n_below and torch.equal(w.bool(), (p < 0.7) & valid)
    # min_kept large (but < valid): batch_kept dominates, exactly batch_kept distinct hardest pixels kept.
    min_kept = (n_below + int(valid.sum())) // 4  # batch_kept = 2*min_kept between n_below and num_valid
    assert n_below < 2 * min_kept < int(valid.sum())
    w = ohem_weights(logits, label, thresh=0.7, min_kept=min_kept)
    assert int(w.sum()) == 2 * min_kept
    assert p[w.bool()].max() < p[valid & ~w.bool()].min()  # the kept ones are the hardest


def test_ohem_loss_rank_variant_keeps_top_losses() -> None:
    logits, label = _case(seed=7)
    w = ohem_weights(logits, label, thresh=None, min_kept=50)
    assert int(w.sum()) == 100  # batch_kept = 50 * N
    losses = F.cross_entropy(logits, label, reduction="none", ignore_index=IGN)
    valid = label != IGN
    assert losses[w.bool()].min() >= losses[valid & ~w.bool()].max()


def test_ohem_loss_divisor_is_all_pixels() -> None:
    logits, label = _case(seed=8, scale=3.0)
    w = ohem_weights(logits, label, 0.7, 20)
    loss = cross_entropy_all_pixels(logits, label, weight=w)
    assert 0 < w.sum() < (label != IGN).sum()
    assert loss.item() == pytest.approx(_ce_reference(logits, label, w), rel=1e-5)
    per_pixel = F.cross_entropy(logits, label, reduction="none", ignore_index=IGN)
    assert loss.item() == pytest.approx((per_pixel * w).sum().item() / label.numel(), rel=1e-6)
    assert loss.item() < (per_pixel * w).sum().item() / w.sum().item()  # not divided by the kept count


# ------------------------------------------------------------------------------------------ MultiHead


def _heads(n: int = 2, size: int = 64, seed: int = 0, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # decode @1/8, aux0 @1/4, aux1 @1/8, aux2 @1/16, aux3 @1/32 (docs/reproduction.md#network)
    strides = (8, 4, 8, 16, 32)
    return [
        (torch.randn(n, 19, size // s, size // s, generator=g) * 3).requires_grad_(requires_grad)
        for s in strides
    ]


def _label(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 100)
    label = torch.randint(0, 19, (n, size, size), generator=g)
    label[torch.rand(n, size, size, generator=g) < 0.1] = IGN
    return label


def _up(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)


def test_mode_resolution() -> None:
    assert MultiHeadLoss().ohem_mode == "none"
    assert MultiHeadLoss(ohem_thresh=None, ohem_min_kept=10000).ohem_mode == "none"
    assert MultiHeadLoss(ohem_thresh=0.7, ohem_min_kept=10000).ohem_mode == "thresh"
    assert MultiHeadLoss(ohem=True, ohem_thresh=0.7).ohem_mode == "thresh"
    assert MultiHeadLoss(ohem=True, ohem_thresh=None).ohem_mode == "loss_rank"
    assert MultiHeadLoss(ohem=False, ohem_thresh=0.7).ohem_mode == "none"
    assert "thresh" in repr(MultiHeadLoss(ohem_thresh=0.7))
    with pytest.raises(ValueError):
        MultiHeadLoss(loss_weights=[1.0, 1.0])


def test_multihead_upsamples_before_ce_and_sums() -> None:
    heads, label = _heads(), _label()
    out = MultiHeadLoss()(heads, label)
    assert set(out) == {*HEAD_NAMES, "total", "acc"}
    for name, x in zip(HEAD_NAMES, heads, strict=True):
        manual = cross_entropy_all_pixels(_up(x, 64), label)
        assert out[name].item() == pytest.approx(manual.item(), rel=1e-6), name
        # Computing CE at the head's resolution on a downsampled label would be a different number.
        small = label[:, :: 64 // x.shape[-1], :: 64 // x.shape[-1]]
        if x.shape[-1] != 64:
            assert abs(cross_entropy_all_pixels(x, small).item() - out[name].item()) > 1e-4
    assert out["total"].item() == pytest.approx(sum(out[n].item() for n in HEAD_NAMES), rel=1e-6)
    # acc = pixel accuracy of the upsampled decode logits over non-255 pixels, in percent.
    valid = label != IGN
    acc = ((_up(heads[0], 64).argmax(1) == label) & valid).sum() / valid.sum() * 100
    assert out["acc"].item() == pytest.approx(acc.item(), rel=1e-6)


def test_multihead_fewer_heads_and_weights() -> None:
    heads, label = _heads(), _label()
    out = MultiHeadLoss()(heads[:1], label)
    assert set(out) == {"decode", "total", "acc"}
    assert out["total"].item() == pytest.approx(out["decode"].item())
    w = [1.0, 0.5, 0.0, 2.0, 1.0]
    out_w = MultiHeadLoss(loss_weights=w)(heads, label)
    ref = sum(wi * out_w[n].item() for wi, n in zip(w, HEAD_NAMES, strict=True))
    assert out_w["total"].item() == pytest.approx(ref, rel=1e-6)


def test_multihead_32_to_1024() -> None:
    # aux head 3's 32x32 logits are upsampled x32 to the 1024x1024 label before the loss
    # (docs/reproduction.md#loss).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 19, 32, 32, generator=g)
    label = torch.randint(0, 19, (1, 1024, 1024), generator=g)
    out = MultiHeadLoss(ohem_thresh=0.7)([x], label)
    up = _up(x, 1024)
    manual = cross_entropy_all_pixels(up, label, ohem_weights(up, label, 0.7, 10000))
    assert out["decode"].item() == pytest.approx(manual.item(), rel=1e-6)


@pytest.mark.parametrize("thresh", [0.7, None])
def test_multihead_ohem_per_head(thresh: float | None) -> None:
    heads, label = _heads(seed=3), _label(seed=3)
    loss_fn = MultiHeadLoss(ohem=True, ohem_thresh=thresh, ohem_min_kept=300)
    out = loss_fn(heads, label)
    masks = []
    for name, x in zip(HEAD_NAMES, heads, strict=True):
        up = _up(x, 64)
        mask = ohem_weights(up, label, thresh, 300)
        masks.append(mask)
        expected = cross_entropy_all_pixels(up, label, weight=mask)
        assert out[name].item() == pytest.approx(expected.item(), rel=1e-6), name
        if name != "decode":
            # Each head uses its own mask: the decode head's mask would give another value.
            shared = cross_entropy_all_pixels(up, label, weight=masks[0])
            assert abs(shared.item() - out[name].item()) > 1e-5
    assert not all(torch.equal(masks[0], m) for m in masks[1:])
    plain = MultiHeadLoss()(heads, label)
    assert out["total"].item() < plain["total"].item()  # dropped pixels contribute 0, same divisor


def test_multihead_autocast_fp32_and_grad() -> None:
    heads = [h.bfloat16().requires_grad_() for h in _heads()]
    label = _label()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = MultiHeadLoss(ohem_thresh=0.7, ohem_min_kept=100)(heads, label)
    for name in (*HEAD_NAMES, "total"):
        assert out[name].dtype == torch.float32, name
    ref = MultiHeadLoss(ohem_thresh=0.7, ohem_min_kept=100)([h.detach().float() for h in heads], label)
    for name in (*HEAD_NAMES, "total"):
        assert out[name].item() == pytest.approx(ref[name].item(), rel=1e-6), name
    out["total"].backward()
    for h in heads:
        assert h.grad is not None and h.grad.abs().sum() > 0
    assert not out["acc"].requires_grad


def test_multihead_gradient_matches_manual() -> None:
    heads = _heads(requires_grad=True)
    label = _label()
    MultiHeadLoss()(heads, label)["total"].backward()
    heads2 = [h.detach().clone().requires_grad_() for h in heads]
    sum(cross_entropy_all_pixels(_up(h, 64), label) for h in heads2).backward()
    for a, b in zip(heads, heads2, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- fused (default) vs mmseg


def _both_impls(heads: list[torch.Tensor], label: torch.Tensor, channels_last: bool, **kw):
    """Losses and head gradients of `impl="mmseg"` (NCHW heads, the previous path) and of the default
    fused one (heads in `channels_last` or NCHW)."""
    runs = {}
    for impl, cl in (("mmseg", False), ("fused", channels_last)):
        fmt = torch.channels_last if cl else torch.contiguous_format
        hs = [h.detach().contiguous(memory_format=fmt).requires_grad_() for h in heads]
        out = MultiHeadLoss(impl=impl, **kw)(hs, label)
        out["total"].backward()
        runs[impl] = ({k: v.item() for k, v in out.items()}, [h.grad for h in hs])
    return runs["mmseg"], runs["fused"]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("ohem_thresh", [None, 0.7])
def test_fused_loss_gives_the_mmseg_ops_losses_and_gradients(channels_last: bool, ohem_thresh) -> None:
    """The fused path computes the same formulas as F.interpolate + F.cross_entropy + autograd: losses to
    1e-6 and gradients to 1e-5 relative (measured: losses equal, gradients 5e-7 of their largest value;
    the last bit differs where two exp routines and NHWC/NCHW summation orders round differently)."""
    heads, label = _heads(seed=5), _label(seed=5)
    heads[-1] = torch.randn(2, 19, 64, 64, generator=torch.Generator().manual_seed(9))  # at label size
    (ref, ref_grads), (got, got_grads) = _both_impls(
        heads, label, channels_last, ohem_thresh=ohem_thresh, ohem_min_kept=300,
        loss_weights=[1.0, 0.4, 1.0, 2.0, 1.0],
    )  # fmt: skip
    for name in (*HEAD_NAMES, "total", "acc"):
        assert got[name] == pytest.approx(ref[name], rel=1e-6), name
    for a, b in zip(got_grads, ref_grads, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_fused_loss_at_the_benchmark_size() -> None:
    """Batch 2 of 512x512 with the five heads' strides, as the training step: the same numbers."""
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 19, (2, 512, 512), generator=g)
    label[torch.rand(2, 512, 512, generator=g) < 0.05] = IGN
    heads = [torch.randn(2, 19, 512 // s, 512 // s, generator=g) * 3 for s in (8, 4, 8, 16, 32)]
    (ref, ref_grads), (got, got_grads) = _both_impls(heads, label, channels_last=True)
    for name in (*HEAD_NAMES, "total", "acc"):
        assert got[name] == pytest.approx(ref[name], rel=1e-6), name
    for a, b in zip(got_grads, ref_grads, strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_fused_upsampling_is_f_interpolate_in_place() -> None:
    """The upsampled map is F.interpolate's, bit for bit, written into the kept buffer (no copy)."""
    x = torch.randn(2, 19, 8, 8).contiguous(memory_format=torch.channels_last)
    label = _label(size=64)
    loss_fn = MultiHeadLoss()
    _, up = loss_fn.head_loss(x, label)
    assert torch.equal(up, _up(x, 64))
    assert up.is_contiguous(memory_format=torch.channels_last)
    assert up.data_ptr() == loss_fn._upsampled.free[0].data_ptr()


def test_fused_loss_reuses_its_buffers_and_backward_runs_once() -> None:
    heads, label = _heads(requires_grad=True), _label()
    loss_fn = MultiHeadLoss()
    loss_fn(heads, label)["total"].backward()
    kept = {b.data_ptr() for b in loss_fn._log_probs.free}
    assert len(kept) == len(HEAD_NAMES)  # every head's log-softmax came back after backward
    out = loss_fn([h.detach().requires_grad_() for h in heads], label)
    assert not loss_fn._log_probs.free  # lent to this step's graph
    out["total"].backward(retain_graph=True)
    assert {b.data_ptr() for b in loss_fn._log_probs.free} == kept  # the same memory, step after step
    with pytest.raises(RuntimeError, match="once"):
        out["total"].backward()
    # a graph dropped without backward (a diverged step) takes its buffers with it; the next step works
    loss_fn(heads, label)
    second = MultiHeadLoss()([h.detach().requires_grad_() for h in heads], label)
    loss_fn([h.detach().requires_grad_() for h in heads], label)["total"].backward()
    assert loss_fn(heads, label)["total"].item() == pytest.approx(second["total"].item(), rel=1e-7)
    copied = copy.deepcopy(loss_fn)
    assert not copied._log_probs.free and not copied._upsampled.free
    loss_fn.release_buffers()
    assert not loss_fn._log_probs.free and not loss_fn._upsampled.free


def test_loss_impl_is_checked() -> None:
    with pytest.raises(ValueError, match="impl"):
        MultiHeadLoss(impl="fast")
    assert "impl='fused'" in repr(MultiHeadLoss())
