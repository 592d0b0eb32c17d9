"""FCNHead: the decode head and the four auxiliary ("booster") heads (docs/reproduction.md#heads)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from bisenet_pl.models.layers import ConvBNAct


class FCNHead(nn.Module):
    """`convs` (num_convs x CBR 3x3) -> Dropout2d -> `conv_seg` (1x1 with bias) (docs/reproduction.md#heads).

    The head takes ONE feature map (the segmentor picks it by index) and returns logits at that map's
    resolution; upsampling belongs to the loss and to inference.

    `conv_seg` is created before `convs`, as in mmseg's BaseDecodeHead, so `state_dict()` order matches
    an mmseg checkpoint.

    Args:
        in_channels: channels of the input map.
        channels: channels of every conv in `convs`.
        num_convs: 1 for the decode head, 2 for the aux heads (must be >= 1).
        num_classes: output channels of `conv_seg`.
        dropout: Dropout2d probability before `conv_seg` (0.1 for all five heads, docs/reproduction.md#heads).
        conv_seg_std: std of the Normal(0, std) init of `conv_seg` (bias 0); `None` keeps PyTorch's
            default Conv2d init. mmseg's decode head gets Normal(0, 0.01); the aux heads keep PyTorch's
            default because mmseg holds them in a plain `nn.ModuleList`, which has no `init_weights`,
            so BaseModule's recursive init never reaches them and their Normal init_cfg is never
            applied (docs/reproduction.md#init).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_convs: int,
        num_classes: int = 19,
        kernel_size: int = 3,
        dropout: float = 0.1,
        conv_seg_std: float | None = 0.01,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.in_channels = in_channels
        self.channels = channels
        self.num_classes = num_classes
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        if conv_seg_std is not None:
            nn.init.normal_(self.conv_seg.weight, mean=0.0, std=conv_seg_std)
            bias = self.conv_seg.bias
            assert bias is not None  # a Conv2d built with its default bias=True
            nn.init.zeros_(bias)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.convs = nn.Sequential(
            *[ConvBNAct(in_channels if i == 0 else channels, channels, kernel_size) for i in range(num_convs)]
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The `convs` output: what the classifier sees (an accelerated path may run it in bf16)."""
        return self.convs(x)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Dropout (identity in eval) and the 1x1 classifier `conv_seg`."""
        return self.conv_seg(self.dropout(feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def fuse(self) -> None:
        """Fold the BNs of `convs` into their convs (inference only)."""
        for m in self.convs:
            cast(ConvBNAct, m).fuse()
