"""The network against mmseg's facts (docs/reproduction.md#network): shapes, parameters, keys, MACs, init,
blocks."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _shared import randomize_bn
from torch import nn

from bisenet_pl.models import BiSeNetV2, FCNHead, Segmentor
from bisenet_pl.models.bisenetv2 import BGALayer, CEBlock, GELayer
from bisenet_pl.models.complexity import count_macs, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# mmseg's BiSeNetV2 state dict: every key, shape and dtype (385 tensors), read from mmseg 1.2.2.
KEYS_JSON = Path(__file__).resolve().parents[1] / "data" / "mmseg_state_dict_keys.json"


@pytest.fixture(scope="module")
def model() -> Segmentor:
    torch.manual_seed(0)
    return Segmentor()


@pytest.fixture(scope="module")
def mmseg_keys() -> list[dict]:
    return json.loads(KEYS_JSON.read_text())


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so BN mistakes change outputs."""
    randomize_bn(module, seed=seed, classifier_std=None)


# ----------------------------------------------------------------------------------------- shapes


def test_feature_map_shapes_200x328(model: Segmentor) -> None:
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 200, 328))
    assert isinstance(feats, tuple) and len(feats) == 5
    got = [tuple(f.shape[1:]) for f in feats]
    assert got == [(128, 25, 41), (16, 50, 82), (32, 25, 41), (64, 13, 21), (128, 7, 11)]


def test_eval_forward_upsamples_to_input_size(model: Segmentor) -> None:
    model.eval()
    x = torch.randn(1, 3, 200, 328)
    with torch.no_grad():
        out = model(x)
        low = model.forward_logits(x)
    assert out.shape == (1, 19, 200, 328)
    assert low.shape == (1, 19, 25, 41)
    # mmseg's first resize: bilinear, align_corners=False, of the 1/8 decode logits
    ref = F.interpolate(low, size=(200, 328), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, F.interpolate(low, size=(200, 328), mode="bilinear", align_corners=True))


def test_train_forward_returns_decode_and_aux_at_own_resolution(model: Segmentor) -> None:
    model.train()
    try:
        logits, aux = model(torch.randn(2, 3, 200, 328))
        low = model.forward_logits(torch.randn(2, 3, 200, 328))
    finally:
        model.eval()
    assert logits.shape == (2, 19, 25, 41)
    assert low.shape == (2, 19, 25, 41)
    assert isinstance(aux, list) and [tuple(a.shape) for a in aux] == [
        (2, 19, 50, 82),
        (2, 19, 25, 41),
        (2, 19, 13, 21),
        (2, 19, 7, 11),
    ]


def test_without_aux_heads_train_forward_has_empty_list() -> None:
    m = Segmentor(aux_heads=False).train()
    assert isinstance(m.aux_heads, nn.ModuleList) and len(m.aux_heads) == 0
    logits, aux = m(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 19, 8, 8) and aux == []


@pytest.mark.parametrize("hw", [(33, 47), (65, 97), (128, 96), (17, 255)])
def test_any_input_size_works(model: Segmentor, hw: tuple[int, int]) -> None:
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, *hw))
        out = model(torch.randn(1, 3, *hw))
    assert out.shape == (1, 19, *hw)

    def down(n: int, times: int) -> int:
        for _ in range(times):
            n = math.ceil(n / 2)
        return n

    for f, times in zip(feats, (3, 2, 3, 4, 5), strict=True):
        assert tuple(f.shape[2:]) == (down(hw[0], times), down(hw[1], times))


def test_backbone_output_order(model: Segmentor) -> None:
    """docs/reproduction.md#network: [BGA out] + semantic outs[:-1]: index 4 is stage4 BEFORE the CEBlock."""
    model.eval()
    captured: dict[str, torch.Tensor] = {}
    sem = model.backbone.semantic
    hooks = [
        model.backbone.bga.register_forward_hook(lambda m, i, o: captured.__setitem__("bga", o)),
        sem.stage1.register_forward_hook(lambda m, i, o: captured.__setitem__("s1", o)),
        sem.stage4.register_forward_hook(lambda m, i, o: captured.__setitem__("s4", o)),
        sem.stage4_CEBlock.register_forward_hook(lambda m, i, o: captured.__setitem__("ce", o)),
    ]
    try:
        with torch.no_grad():
            feats = model.backbone(torch.randn(1, 3, 64, 96))
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(feats[0], captured["bga"])
    assert torch.equal(feats[1], captured["s1"])
    assert torch.equal(feats[4], captured["s4"])
    assert not torch.equal(feats[4], captured["ce"])


# ----------------------------------------------------------------------------- parameters & keys


def _mmseg_parameters(mmseg_keys: list[dict], prefix: str) -> int:
    """Parameters under `prefix` in mmseg's own state-dict key list (BN buffers excluded): an independent
    count, from the shapes of mmseg's checkpoint rather than from our modules."""
    buffers = (".running_mean", ".running_var", ".num_batches_tracked")
    return sum(
        math.prod(e["shape"])
        for e in mmseg_keys
        if e["key"].startswith(prefix) and not e["key"].endswith(buffers)
    )


def test_parameter_counts_exact(model: Segmentor, mmseg_keys: list[dict]) -> None:
    p = count_parameters(model)
    # the totals mmseg publishes for this config (3.36 M for inference, 14.80 M with the aux heads)
    assert p["inference"] == 3_358_883
    assert p["training"] == p["total"] == 14_804_255
    # every part against mmseg's key list
    parts = {
        "backbone": "backbone.",
        "detail": "backbone.detail.",
        "semantic": "backbone.semantic.",
        "bga": "backbone.bga.",
        "decode_head": "decode_head.",
        "aux_heads": "auxiliary_head.",
        **{f"aux_head_{i}": f"auxiliary_head.{i}." for i in range(4)},
    }
    for part, prefix in parts.items():
        assert p[part] == _mmseg_parameters(mmseg_keys, prefix), part
    assert p["total"] == _mmseg_parameters(mmseg_keys, "")
    sem = model.backbone.semantic
    for stage in [*sem.stage_names, sem.ce_name]:
        ours = sum(q.numel() for q in getattr(sem, stage).parameters())
        assert ours == _mmseg_parameters(mmseg_keys, f"backbone.semantic.{stage}.") > 0, stage


def test_state_dict_equals_mmseg_keys_shapes_dtypes(model: Segmentor, mmseg_keys: list[dict]) -> None:
    sd = model.state_dict()
    assert len(sd) == 385
    expected = [e["key"].replace("auxiliary_head.", "aux_heads.", 1) for e in mmseg_keys]
    assert list(sd) == expected  # same keys, same order as an mmseg checkpoint
    for e, key in zip(mmseg_keys, expected, strict=True):
        assert list(sd[key].shape) == e["shape"], key
        assert str(sd[key].dtype) == e["dtype"], key
    assert sum(v.numel() for k, v in sd.items() if ".running_" in k) == 22_768


def test_no_aux_state_dict_is_mmseg_minus_aux(mmseg_keys: list[dict]) -> None:
    sd = Segmentor(aux_heads=False).state_dict()
    assert list(sd) == [e["key"] for e in mmseg_keys if not e["key"].startswith("auxiliary_head.")]


def test_config_is_plain_and_rebuilds(model: Segmentor) -> None:
    cfg = model.config
    assert json.loads(json.dumps(cfg)) == cfg  # ints/floats/bools/lists only
    assert cfg == {
        "num_classes": 19,
        "aux_heads": True,
        "head_dropout": 0.1,
        "align_corners": False,
        "detail_channels": [64, 64, 128],
        "semantic_channels": [16, 32, 64, 128],
        "semantic_expansion_ratio": 6,
        "bga_channels": 128,
        "decode_channels": 1024,
        "aux_channels": [16, 64, 256, 1024],
    }
    cfg["detail_channels"].append(1)  # a copy: mutating it must not touch the model
    assert model.config["detail_channels"] == [64, 64, 128]
    small = Segmentor(num_classes=5, aux_heads=False, decode_channels=32, semantic_expansion_ratio=4)
    rebuilt = Segmentor(**small.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in small.state_dict().items()
    }
    assert rebuilt.config == small.config


def test_exports() -> None:
    import bisenet_pl.models as models

    assert {"Segmentor", "BiSeNetV2", "FCNHead"} <= set(models.__all__)
    m = Segmentor(aux_heads=False)
    assert isinstance(m.backbone, BiSeNetV2) and isinstance(m.decode_head, FCNHead)


# ------------------------------------------------------------------------------------------- MACs


def _parts_g(r: dict) -> dict[str, float]:
    return {
        k: round(r[k] / 1e9, 2) for k in ("total", "backbone", "detail", "semantic", "bga", "decode_head")
    }


def test_count_macs_matches_spec_512x1024(model: Segmentor) -> None:
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    r = count_macs(model, (1, 3, 512, 1024))
    assert model.training  # train/eval flags restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # no BN update
    model.eval()
    assert _parts_g(r) == {
        "total": 24.71,
        "backbone": 14.87,
        "detail": 11.75,
        "semantic": 1.37,
        "bga": 1.75,
        "decode_head": 9.84,
    }
    # the conv-only cross-check of docs/reproduction.md#speed
    assert round(r["by_operator"]["conv"] / 1e9, 2) == 24.60
    assert r["total"] == sum(r["by_operator"].values())
    assert r["backbone"] == r["detail"] + r["semantic"] + r["bga"]
    assert r["total"] == r["backbone"] + r["decode_head"]  # aux heads excluded


def test_count_macs_matches_spec_1024x2048(model: Segmentor) -> None:
    r = count_macs(model, (1, 3, 1024, 2048))
    assert _parts_g(r) == {
        "total": 98.85,
        "backbone": 59.49,
        "detail": 47.02,
        "semantic": 5.47,
        "bga": 7.01,
        "decode_head": 39.36,
    }
    assert round(r["by_operator"]["batch_norm"] / 1e9, 2) == 0.41
    assert round(r["by_operator"]["upsample_bilinear2d"] / 1e9, 3) == 0.034


@pytest.mark.parametrize("size", [(512, 1024), (1024, 2048)])
def test_count_macs_equals_fvcore(model: Segmentor, size: tuple[int, int]) -> None:
    """fvcore (a test dependency, never skipped) counts the same MACs, in total, per part and per
    operator: the sub-part figures of the spec tests above are fvcore's too, not only ours."""
    import fvcore.nn as fvcore_nn

    class Logits(nn.Module):
        def __init__(self, m: Segmentor) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m.forward_logits(x)

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fa = fvcore_nn.FlopCountAnalysis(Logits(model), torch.zeros(1, 3, *size))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        total, by_module, by_op = fa.total(), fa.by_module(), fa.by_operator()
    ours = count_macs(model, (1, 3, *size))
    assert ours["total"] == total
    assert round(total / 1e9, 2) == {(512, 1024): 24.71, (1024, 2048): 98.85}[size]
    for part, name in [
        ("backbone", "m.backbone"),
        ("detail", "m.backbone.detail"),
        ("semantic", "m.backbone.semantic"),
        ("bga", "m.backbone.bga"),
        ("decode_head", "m.decode_head"),
    ]:
        assert ours[part] == by_module[name], part
    assert ours["by_operator"] == dict(by_op)


# ---------------------------------------------------------------------------------- architecture


def test_stem_concat_order_left_branch_first() -> None:
    torch.manual_seed(1)
    m = BiSeNetV2().eval()
    randomise_bn(m)
    stem = m.semantic.stage1
    seen: list[torch.Tensor] = []
    h = stem.fuse_last.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0]))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stem(x)
        first = stem.conv_first(x)
        left, right = stem.convs(first), stem.pool(first)
    h.remove()
    assert seen[0].shape[1] == 32
    assert torch.equal(seen[0][:, :16], left) and torch.equal(seen[0][:, 16:], right)
    assert isinstance(stem.pool, nn.MaxPool2d) and stem.pool.kernel_size == 3 and stem.pool.padding == 1


def _conv(block: nn.Module) -> nn.Conv2d:
    return block.conv


def test_ge_layer_grouped_vs_depthwise_convs_and_relus() -> None:
    sem = BiSeNetV2().semantic
    s1: GELayer = sem.stage2[1]  # 32 -> 32, stride 1
    s2: GELayer = sem.stage2[0]  # 16 -> 32, stride 2
    # stride 1: one grouped conv with depth multiplier 6 (groups=in, out=6*in), WITH ReLU
    c = _conv(s1.dwconv[0])
    assert (c.in_channels, c.out_channels, c.groups, c.stride) == (32, 192, 32, (1, 1))
    assert hasattr(s1.dwconv[0], "activate") and len(s1.dwconv) == 1 and s1.shortcut is None
    # stride 2: grouped s2 conv without ReLU, then a true depthwise conv (groups=mid) with ReLU
    c0, c1 = _conv(s2.dwconv[0]), _conv(s2.dwconv[1])
    assert (c0.in_channels, c0.out_channels, c0.groups, c0.stride) == (16, 96, 16, (2, 2))
    assert (c1.in_channels, c1.out_channels, c1.groups, c1.stride) == (96, 96, 96, (1, 1))
    assert not hasattr(s2.dwconv[0], "activate") and hasattr(s2.dwconv[1], "activate")
    # conv1 CBR, conv2 CB; shortcut: depthwise CB s2 + pointwise CB, no activations
    for layer in (s1, s2):
        assert hasattr(layer.conv1, "activate") and hasattr(layer.conv1, "bn")
        assert hasattr(layer.conv2[0], "bn") and not hasattr(layer.conv2[0], "activate")
    dw, pw = s2.shortcut[0].depthwise_conv, s2.shortcut[0].pointwise_conv
    assert (dw.conv.groups, dw.conv.stride, dw.conv.out_channels) == (16, (2, 2), 16)
    assert pw.conv.kernel_size == (1, 1) and pw.conv.out_channels == 32
    assert all(hasattr(b, "bn") and not hasattr(b, "activate") for b in (dw, pw))
    assert all(b.conv.bias is None for b in (dw, pw, s2.dwconv[0], s2.dwconv[1], s1.conv1))


def test_ge_layer_forward_is_relu_of_sum() -> None:
    torch.manual_seed(2)
    sem = BiSeNetV2().semantic.eval()
    randomise_bn(sem)
    for layer in (sem.stage3[0], sem.stage3[1]):
        x = torch.randn(1, layer.conv1.conv.in_channels, 16, 16)
        with torch.no_grad():
            main = layer.conv2(layer.dwconv(layer.conv1(x)))
            short = x if layer.shortcut is None else layer.shortcut(x)
            assert torch.allclose(layer(x.clone()), torch.relu(main + short), atol=1e-6)
            assert (main + short).min() < 0  # the final ReLU is doing something


def test_ceblock_structure_and_forward() -> None:
    torch.manual_seed(3)
    ce: CEBlock = BiSeNetV2().semantic.stage4_CEBlock.eval()
    randomise_bn(ce)
    assert isinstance(ce.gap[0], nn.AdaptiveAvgPool2d) and isinstance(ce.gap[1], nn.BatchNorm2d)
    assert "gap.1.running_var" in ce.state_dict()
    assert (
        hasattr(ce.conv_gap, "activate") and hasattr(ce.conv_last, "bn") and hasattr(ce.conv_last, "activate")
    )
    x = torch.randn(1, 128, 5, 7)
    with torch.no_grad():
        pooled = F.batch_norm(
            x.mean((2, 3), keepdim=True),
            ce.gap[1].running_mean,
            ce.gap[1].running_var,
            ce.gap[1].weight,
            ce.gap[1].bias,
            eps=1e-5,
        )
        ref = ce.conv_last(x + ce.conv_gap(pooled))
        assert torch.allclose(ce(x), ref, atol=1e-6)


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)


def _bga_reference(
    bga: BGALayer, x_d: torch.Tensor, x_s: torch.Tensor, variant: str = "mmseg"
) -> torch.Tensor:
    """A functional BGA forward (docs/reproduction.md#network) written with the module's own weights."""

    def dw_sep(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        dw, pw = seq[0].depthwise_conv, seq[0].pointwise_conv
        y = _bn(F.conv2d(x, dw.conv.weight, None, 1, 1, 1, x.shape[1]), dw.bn)
        return F.conv2d(y, pw.conv.weight, pw.conv.bias)

    def cb(block: nn.Module, x: torch.Tensor, stride: int) -> torch.Tensor:
        return _bn(F.conv2d(x, block.conv.weight, None, stride, 1), block.bn)

    def up(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    d_dw = dw_sep(bga.detail_dwconv, x_d)
    d_down = F.avg_pool2d(cb(bga.detail_down[0], x_d, 2), 3, 2, 1, count_include_pad=True)
    s_conv = cb(bga.semantic_conv[0], x_s, 1)
    s_dw = dw_sep(bga.semantic_dwconv, x_s)
    size = d_dw.shape[2:]
    if variant == "sigmoid_then_resize":
        fuse_1 = d_dw * up(torch.sigmoid(s_conv), size)
    else:
        fuse_1 = d_dw * torch.sigmoid(up(s_conv, size))
    if variant == "resize_then_multiply":
        fuse_2 = up(d_down, size) * up(torch.sigmoid(s_dw), size)
    else:
        fuse_2 = up(d_down * torch.sigmoid(s_dw), size)
    if variant == "no_pad_count":
        d_down = F.avg_pool2d(cb(bga.detail_down[0], x_d, 2), 3, 2, 1, count_include_pad=False)
        fuse_2 = up(d_down * torch.sigmoid(s_dw), size)
    c = bga.conv
    return torch.relu(_bn(F.conv2d(fuse_1 + fuse_2, c.conv.weight, None, 1, 1), c.bn))


def test_bga_matches_functional_reference_and_order_matters() -> None:
    torch.manual_seed(4)
    bga = BGALayer(128).eval()
    randomise_bn(bga)
    with torch.no_grad():
        for p in (
            bga.detail_dwconv[0].pointwise_conv.conv.bias,
            bga.semantic_dwconv[0].pointwise_conv.conv.bias,
        ):
            p.normal_()  # biases are 0 at init: give them a value so their use is tested
        x_d, x_s = torch.randn(1, 128, 25, 41), torch.randn(1, 128, 7, 11)
        out = bga(x_d, x_s)
        ref = _bga_reference(bga, x_d, x_s)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        for variant in ("sigmoid_then_resize", "resize_then_multiply", "no_pad_count"):
            assert (out - _bga_reference(bga, x_d, x_s, variant)).abs().max() > 1e-3, variant


def test_bga_structure() -> None:
    bga = BGALayer(128)
    for seq in (bga.detail_dwconv, bga.semantic_dwconv):
        dw, pw = seq[0].depthwise_conv, seq[0].pointwise_conv
        assert dw.conv.groups == 128 and hasattr(dw, "bn") and not hasattr(dw, "activate")
        assert pw.conv.bias is not None and not hasattr(pw, "bn") and not hasattr(pw, "activate")
    down, pool = bga.detail_down
    assert down.conv.stride == (2, 2) and hasattr(down, "bn") and not hasattr(down, "activate")
    assert isinstance(pool, nn.AvgPool2d) and pool.count_include_pad is True
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 1, False)
    sc = bga.semantic_conv[0]
    assert hasattr(sc, "bn") and not hasattr(sc, "activate") and sc.conv.stride == (1, 1)
    assert hasattr(bga.conv, "bn") and hasattr(bga.conv, "activate")


def test_every_head_has_dropout2d_p01(model: Segmentor) -> None:
    heads = [model.decode_head, *model.aux_heads]
    assert len(heads) == 5
    for h in heads:
        assert isinstance(h.dropout, nn.Dropout2d) and h.dropout.p == 0.1
    assert [len(h.convs) for h in heads] == [1, 2, 2, 2, 2]
    assert all(h.conv_seg.bias is not None and h.conv_seg.kernel_size == (1, 1) for h in heads)
    assert all(
        c.conv.bias is None and hasattr(c, "bn") and hasattr(c, "activate") for h in heads for c in h.convs
    )


def test_head_dropout_is_channelwise_and_train_only() -> None:
    torch.manual_seed(5)
    head = FCNHead(8, 16, num_convs=1, num_classes=3, dropout=0.5)
    x = torch.randn(2, 8, 6, 6)
    head.eval()
    with torch.no_grad():
        assert torch.equal(head(x), head(x))
        head.train()
        feats = head.convs(x)
        dropped = head.dropout(feats)
    zero_maps = (dropped.flatten(2).abs().sum(-1) == 0).sum()
    assert zero_maps > 0  # whole channels are zeroed (Dropout2d), not single pixels


# ---------------------------------------------------------------------------------------- init


def _kaiming_fan_out_std(w: torch.Tensor) -> float:
    return math.sqrt(2.0 / (w.shape[0] * w[0, 0].numel()))


@pytest.mark.parametrize(
    "path",
    [
        "backbone.detail.detail_branch.2.1.conv.weight",
        "backbone.semantic.stage4.1.dwconv.0.conv.weight",
        "backbone.semantic.stage4.0.dwconv.1.conv.weight",
        "backbone.bga.detail_dwconv.0.pointwise_conv.conv.weight",
        "decode_head.convs.0.conv.weight",
        "aux_heads.2.convs.1.conv.weight",
    ],
)
def test_kaiming_fan_out_init(model: Segmentor, path: str) -> None:
    w = model.state_dict()[path]
    expected = _kaiming_fan_out_std(w)
    assert abs(w.std().item() / expected - 1) < 0.06, (w.std().item(), expected)
    assert abs(w.mean().item()) < 0.1 * expected


def test_bn_and_bias_init(model: Segmentor) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name
    assert torch.all(model.backbone.bga.detail_dwconv[0].pointwise_conv.conv.bias == 0)
    assert torch.all(model.backbone.bga.semantic_dwconv[0].pointwise_conv.conv.bias == 0)


def test_conv_seg_init_decode_normal_aux_pytorch_default(model: Segmentor) -> None:
    w = model.decode_head.conv_seg.weight
    assert abs(w.std().item() - 0.01) < 0.0005 and torch.all(model.decode_head.conv_seg.bias == 0)
    for head in model.aux_heads:
        fan_in = head.conv_seg.weight.shape[1]
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) bound, and the bias bound
        w, b = head.conv_seg.weight, head.conv_seg.bias
        assert w.abs().max() <= bound and b.abs().max() <= bound
        assert b.abs().max() > 0  # PyTorch's default bias is uniform, not the 0 of Normal init
        assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.25
        assert w.std().item() > 0.015  # clearly not Normal(0, 0.01)


def test_sync_bn_heads_only(model: Segmentor) -> None:
    import copy

    m = copy.deepcopy(model)
    keys = {k: v.shape for k, v in m.state_dict().items()}
    assert m.sync_bn_heads() is m
    heads = [m.decode_head, *m.aux_heads]
    assert all(isinstance(c.bn, nn.SyncBatchNorm) for h in heads for c in h.convs)
    backbone_bns = [x for x in m.backbone.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)]
    assert len(backbone_bns) == 53 and not any(isinstance(x, nn.SyncBatchNorm) for x in backbone_bns)
    assert {k: v.shape for k, v in m.state_dict().items()} == keys
