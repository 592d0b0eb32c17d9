"""Conv-BN-act building blocks shared by the backbone and the heads.

The sub-module names (`conv`, `bn`, `activate`, `depthwise_conv`, `pointwise_conv`) are mmcv's
ConvModule / DepthwiseSeparableConvModule names, so that our state-dict keys are mmseg's keys
(docs/reproduction.md#network) and released mmseg checkpoints load without renaming inside the network.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def kaiming_init_(conv: nn.Conv2d) -> None:
    """mmcv's `kaiming_init` defaults (docs/reproduction.md#init): normal, mode fan_out, relu gain, a=0, bias
    0.

    PyTorch's fan_out of a grouped conv is `out_channels * k * k` (not divided by groups), which is
    what mmcv uses too, so depthwise convs get the same std formula as dense ones.
    """
    nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def constant_init_bn_(bn: nn.BatchNorm2d) -> None:
    """BN weight 1, bias 0 (docs/reproduction.md#init); running stats keep PyTorch's 0/1 start."""
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)


def fold_bn_into_conv(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """Return a new conv (with bias) computing `bn(conv(x))` in eval mode.

    eval BN is per-channel `y = (x - mean) / sqrt(var + eps) * gamma + beta`, i.e. a scale `s` and a
    shift, so it folds exactly into the preceding conv's output channels: `W' = W * s`,
    `b' = (b - mean) * s + beta`. Computed in float64 to keep the fused model within 1e-6 of the
    unfused one in fp32.
    """
    # Our BNs are affine and track running statistics (ConvBNAct builds them with PyTorch's defaults).
    gamma, beta, mean, var = bn.weight, bn.bias, bn.running_mean, bn.running_var
    assert gamma is not None and beta is not None, "fold_bn_into_conv needs an affine BN"
    assert mean is not None and var is not None, "fold_bn_into_conv needs BN running statistics"
    w = conv.weight.detach().double()
    if conv.bias is not None:
        b = conv.bias.detach().double()
    else:
        b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    scale = gamma.detach().double() / torch.sqrt(var.detach().double() + bn.eps)
    # A Conv2d's size attributes are pairs (its stubs type them as tuple[int, ...]).
    pair = tuple[int, int]
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        cast(pair, conv.kernel_size),
        stride=cast(pair, conv.stride),
        padding=cast("str | tuple[int, int]", conv.padding),
        dilation=cast(pair, conv.dilation),
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device)
    fused_bias = fused.bias
    assert fused_bias is not None  # built with bias=True
    with torch.no_grad():
        fused.weight.copy_((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        shift = (b - mean.detach().double()) * scale + beta.detach().double()
        fused_bias.copy_(shift.to(conv.weight.dtype))
    fused.weight.requires_grad_(conv.weight.requires_grad)
    fused_bias.requires_grad_(conv.weight.requires_grad)
    return fused


class ConvBNAct(nn.Module):
    """Conv2d, then optional BatchNorm2d (`bn`), then optional in-place ReLU (`activate`).

    mmcv's ConvModule with `bias='auto'`: the conv has a bias only when no norm follows it
    (docs/reproduction.md#network).
    Absent parts are not registered at all (no `bn` / `activate` attribute keys in the state dict),
    exactly like ConvModule.

    Args:
        in_channels, out_channels, kernel_size, stride, groups: the conv's.
        padding: defaults to `kernel_size // 2` (docs/reproduction.md#network: "Padding is k//2").
        norm: add a BatchNorm2d (PyTorch defaults: eps 1e-5, momentum 0.1).
        act: add a ReLU(inplace=True).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        norm: bool = True,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if padding is None else padding,
            groups=groups,
            bias=not norm,
        )
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        if act:
            self.activate = nn.ReLU(inplace=True)
        self.reset_parameters()

    @property
    def with_norm(self) -> bool:
        return hasattr(self, "bn")

    @property
    def with_act(self) -> bool:
        return hasattr(self, "activate")

    def reset_parameters(self) -> None:
        """ConvModule.init_weights (docs/reproduction.md#init): Kaiming fan_out for the conv, BN 1/0."""
        kaiming_init_(self.conv)
        if self.with_norm:
            constant_init_bn_(self.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.with_norm:
            x = self.bn(x)
        if self.with_act:
            x = self.activate(x)
        return x

    def fuse(self) -> None:
        """Fold `bn` into `conv` in place (inference only: uses BN running statistics)."""
        if self.with_norm:
            self.conv = fold_bn_into_conv(self.conv, self.bn)
            del self.bn


class DepthwiseSeparableConv(nn.Module):
    """mmcv's DepthwiseSeparableConvModule: `depthwise_conv` (groups=in) then 1x1 `pointwise_conv`.

    Each half is a ConvBNAct with its own norm/act switches, because BiSeNetV2 uses two variants:
    GE-layer shortcuts are CB + CB (no act), the BGA's are depthwise CB + pointwise conv *with bias*,
    no BN, no act (docs/reproduction.md#network).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dw_norm: bool = True,
        dw_act: bool = False,
        pw_norm: bool = True,
        pw_act: bool = False,
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvBNAct(
            in_channels, in_channels, kernel_size, stride=stride, groups=in_channels, norm=dw_norm, act=dw_act
        )
        self.pointwise_conv = ConvBNAct(in_channels, out_channels, 1, norm=pw_norm, act=pw_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class Resize(nn.Module):
    """Bilinear resize to a given size, as a module so that forward hooks (MAC counting) see it.

    mmseg's `resize` with an explicit `size` is a plain `F.interpolate(mode='bilinear')`.
    """

    def __init__(self, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"mode=bilinear, align_corners={self.align_corners}"
