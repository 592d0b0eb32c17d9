"""BiSeNetV2 backbone, block by block as mmseg v0.x builds it (docs/reproduction.md#network).

Every block builds its conv-BN-ReLU parts with plain BatchNorm2d + ReLU whatever the caller wants:
in mmseg the backbone's `norm_cfg` never reaches its blocks (docs/reproduction.md#network), so the released
checkpoints were trained with per-GPU BN in the backbone. We make that explicit instead of accepting
a norm argument that would be ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bisenet_pl.models.layers import (
    ConvBNAct,
    DepthwiseSeparableConv,
    Resize,
    constant_init_bn_,
    kaiming_init_,
)


class DetailBranch(nn.Module):
    """Wide, shallow branch: 8 CBR 3x3 convs, stride 8 (docs/reproduction.md#network).

    Stage 0 has two convs, every later stage three; the first conv of each stage has stride 2.
    """

    def __init__(self, channels: Sequence[int] = (64, 64, 128), in_channels: int = 3) -> None:
        super().__init__()
        self.detail_branch = nn.ModuleList()
        prev = in_channels
        for i, ch in enumerate(channels):
            layers = [ConvBNAct(prev, ch, 3, stride=2), ConvBNAct(ch, ch, 3)]
            if i > 0:
                layers.append(ConvBNAct(ch, ch, 3))
            self.detail_branch.append(nn.Sequential(*layers))
            prev = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.detail_branch:
            x = stage(x)
        return x


class StemBlock(nn.Module):
    """Semantic-branch stem, stride 4 (docs/reproduction.md#network).

    The concatenation order is [left conv branch, right max-pool branch]; swapping it would still
    give 2x channels and silently break loading of released weights, so it is tested.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 16) -> None:
        super().__init__()
        self.conv_first = ConvBNAct(in_channels, out_channels, 3, stride=2)
        self.convs = nn.Sequential(
            ConvBNAct(out_channels, out_channels // 2, 1),
            ConvBNAct(out_channels // 2, out_channels, 3, stride=2),
        )
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=False)
        self.fuse_last = ConvBNAct(out_channels * 2, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(x)
        left = self.convs(x)
        right = self.pool(x)
        return self.fuse_last(torch.cat([left, right], dim=1))


class GELayer(nn.Module):
    """Gather-and-Expansion layer (docs/reproduction.md#network); `mid = in_channels * exp_ratio`.

    stride 1: `dwconv = [CBR 3x3 groups=in, in->mid]`: a *grouped* conv with depth multiplier
    `exp_ratio`, not a true depthwise conv, and it keeps its ReLU. Identity shortcut.
    stride 2: `dwconv = [CB 3x3 s2 groups=in in->mid (no ReLU), CBR 3x3 groups=mid (true depthwise)]`,
    and a depthwise-separable shortcut (CB + CB, no act).
    Both: `conv2 = [CB 1x1 mid->out]`, then ReLU(conv2 + shortcut).

    Modules are registered in mmseg's order (conv1, dwconv, shortcut, conv2) so that `state_dict()`
    lists keys in the same order as an mmseg checkpoint.
    """

    def __init__(self, in_channels: int, out_channels: int, exp_ratio: int = 6, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"GELayer stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                "a stride-1 GELayer has an identity shortcut: in_channels must equal out_channels"
            )
        mid = in_channels * exp_ratio
        self.stride = stride
        self.conv1 = ConvBNAct(in_channels, in_channels, 3)
        if stride == 1:
            self.dwconv = nn.Sequential(ConvBNAct(in_channels, mid, 3, groups=in_channels))
            self.shortcut: nn.Sequential | None = None
        else:
            self.dwconv = nn.Sequential(
                ConvBNAct(in_channels, mid, 3, stride=2, groups=in_channels, act=False),
                ConvBNAct(mid, mid, 3, groups=mid),
            )
            self.shortcut = nn.Sequential(
                DepthwiseSeparableConv(in_channels, out_channels, 3, stride=2, dw_act=False, pw_act=False)
            )
        self.conv2 = nn.Sequential(ConvBNAct(mid, out_channels, 1, act=False))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = self.conv2(self.dwconv(self.conv1(x)))
        shortcut = identity if self.shortcut is None else self.shortcut(identity)
        return self.act(x + shortcut)


class CEBlock(nn.Module):
    """Context Embedding block (docs/reproduction.md#network).

    `gap` = global average pool + a plain BatchNorm2d (key `gap.1.*`, no act); `conv_gap` CBR 1x1;
    broadcast-add to the input; `conv_last` CBR 3x3 (mmseg adds BN+ReLU where the paper has a bare conv).
    """

    def __init__(self, in_channels: int = 128, out_channels: int = 128) -> None:
        super().__init__()
        gap_bn = nn.BatchNorm2d(in_channels)
        constant_init_bn_(gap_bn)
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), gap_bn)
        self.conv_gap = ConvBNAct(in_channels, out_channels, 1)
        self.conv_last = ConvBNAct(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = self.conv_gap(self.gap(x))
        return self.conv_last(identity + x)

    def fuse(self) -> None:
        """Fold `gap.1` (an affine per-channel map on the pooled vector) into `conv_gap`'s 1x1 conv.

        For a 1x1 conv without padding, `W (a*x + b) = (W diag(a)) x + W b`: exact. `conv_gap.bn`
        and `conv_last.bn` are folded as usual. `gap.1` becomes an Identity.
        """
        bn = self.gap[1]
        if not isinstance(bn, _BatchNorm):  # already fused (SyncBatchNorm is a _BatchNorm too)
            return
        conv = self.conv_gap.conv
        gamma, beta, mean, var = bn.weight, bn.bias, bn.running_mean, bn.running_var
        assert gamma is not None and beta is not None and mean is not None and var is not None
        scale = gamma.detach().double() / torch.sqrt(var.detach().double() + bn.eps)
        shift = beta.detach().double() - mean.detach().double() * scale
        w = conv.weight.detach().double()  # (out, in, 1, 1)
        new = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=True).to(conv.weight.device)
        old_bias = conv.bias.detach().double() if conv.bias is not None else 0.0
        new_bias = new.bias
        assert new_bias is not None  # built with bias=True
        with torch.no_grad():
            new.weight.copy_((w * scale.view(1, -1, 1, 1)).to(conv.weight.dtype))
            new_bias.copy_((w[:, :, 0, 0] @ shift + old_bias).to(conv.weight.dtype))
        self.conv_gap.conv = new
        self.gap[1] = nn.Identity()
        self.conv_gap.fuse()
        self.conv_last.fuse()


class SemanticBranch(nn.Module):
    """Narrow, deep branch (docs/reproduction.md#network): stem (1/4), GE stages (1/8, 1/16, 1/32), CEBlock.

    Returns the outputs of every stage and of the CEBlock (5 tensors for 4 channel entries): the
    first four feed the aux heads, the last only the BGA layer.
    """

    def __init__(
        self, channels: Sequence[int] = (16, 32, 64, 128), in_channels: int = 3, exp_ratio: int = 6
    ) -> None:
        super().__init__()
        self.stage_names: list[str] = []
        for i, ch in enumerate(channels):
            name = f"stage{i + 1}"
            if i == 0:
                stage: nn.Module = StemBlock(in_channels, ch)
            else:
                prev = channels[i - 1]
                # the last stage has 4 GE layers, the others 2 (docs/reproduction.md#network)
                n_extra = 3 if i == len(channels) - 1 else 1
                stage = nn.Sequential(
                    GELayer(prev, ch, exp_ratio, stride=2),
                    *[GELayer(ch, ch, exp_ratio, stride=1) for _ in range(n_extra)],
                )
            self.add_module(name, stage)
            self.stage_names.append(name)
        self.ce_name = f"stage{len(channels)}_CEBlock"
        self.add_module(self.ce_name, CEBlock(channels[-1], channels[-1]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outs.append(x)
        outs.append(getattr(self, self.ce_name)(x))
        return outs


class BGALayer(nn.Module):
    """Bilateral Guided Aggregation (docs/reproduction.md#network). `x_d`: detail (1/8), `x_s`: CEBlock
    output (1/32).

    The order of operations matters and is mmseg's, not the paper figure's:
    - fuse_1 = detail_dwconv(x_d) * sigmoid(resize(semantic_conv(x_s)))  (resize BEFORE sigmoid);
    - fuse_2 = resize(detail_down(x_d) * sigmoid(semantic_dwconv(x_s)))  (product at 1/32, then resize);
    - out = conv(fuse_1 + fuse_2).
    The depthwise-separable branches end in a 1x1 conv WITH bias and no BN/act; `detail_down`'s
    AvgPool2d keeps `count_include_pad=True` (PyTorch's default).
    """

    def __init__(self, channels: int = 128, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners

        def dw_separable() -> nn.Sequential:
            return nn.Sequential(
                DepthwiseSeparableConv(channels, channels, 3, dw_act=False, pw_norm=False, pw_act=False)
            )

        self.detail_dwconv = dw_separable()
        self.detail_down = nn.Sequential(
            ConvBNAct(channels, channels, 3, stride=2, act=False),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=False, count_include_pad=True),
        )
        self.semantic_conv = nn.Sequential(ConvBNAct(channels, channels, 3, act=False))
        self.semantic_dwconv = dw_separable()
        self.conv = ConvBNAct(channels, channels, 3)
        self.resize = Resize(align_corners=align_corners)

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        detail_dwconv = self.detail_dwconv(x_d)
        detail_down = self.detail_down(x_d)
        semantic_conv = self.semantic_conv(x_s)
        semantic_dwconv = self.semantic_dwconv(x_s)
        semantic_conv = self.resize(semantic_conv, detail_dwconv.shape[2:])
        fuse_1 = detail_dwconv * torch.sigmoid(semantic_conv)
        fuse_2 = self.resize(detail_down * torch.sigmoid(semantic_dwconv), fuse_1.shape[2:])
        return self.conv(fuse_1 + fuse_2)


class BiSeNetV2(nn.Module):
    """mmseg's BiSeNetV2 backbone: `detail`, `semantic`, `bga`.

    `forward(x)` returns a tuple of 5 maps in docs/reproduction.md#network's order:
    (BGA out 1/8, stem 1/4, stage2 1/8, stage3 1/16, stage4 1/32 *before* the CEBlock).
    Every stride-2 op gives ceil(n/2), so any input size works (docs/reproduction.md#network).

    `detail_channels[-1]`, `semantic_channels[-1]` and `bga_channels` must be equal: mmseg's BGA layer
    takes a single channel count for both inputs and its output.
    """

    def __init__(
        self,
        in_channels: int = 3,
        detail_channels: Sequence[int] = (64, 64, 128),
        semantic_channels: Sequence[int] = (16, 32, 64, 128),
        semantic_expansion_ratio: int = 6,
        bga_channels: int = 128,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if not (detail_channels[-1] == semantic_channels[-1] == bga_channels):
            raise ValueError(
                "detail_channels[-1], semantic_channels[-1] and bga_channels must be equal, got "
                f"{detail_channels[-1]}, {semantic_channels[-1]}, {bga_channels}"
            )
        self.detail = DetailBranch(detail_channels, in_channels)
        self.semantic = SemanticBranch(semantic_channels, in_channels, semantic_expansion_ratio)
        self.bga = BGALayer(bga_channels, align_corners)
        self.init_weights()

    def init_weights(self) -> None:
        """The backbone's default init_cfg (docs/reproduction.md#init): Kaiming fan_out on every Conv2d, BN
        1/0.

        This repeats what each ConvModule did at construction and also covers the BGA's biased
        pointwise convs and the CEBlock's plain BN.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_init_(m)
            elif isinstance(m, nn.BatchNorm2d):
                constant_init_bn_(m)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x_detail = self.detail(x)
        semantic_outs = self.semantic(x)
        x_head = self.bga(x_detail, semantic_outs[-1])
        return (x_head, *semantic_outs[:-1])

    def fuse(self) -> None:
        """Fold every BN into its conv (inference only); see `Segmentor.fuse`."""
        for m in list(self.modules()):
            if isinstance(m, CEBlock):
                m.fuse()
        for m in list(self.modules()):
            if isinstance(m, ConvBNAct):
                m.fuse()


__all__ = [
    "BGALayer",
    "BiSeNetV2",
    "CEBlock",
    "DetailBranch",
    "GELayer",
    "SemanticBranch",
    "StemBlock",
]
