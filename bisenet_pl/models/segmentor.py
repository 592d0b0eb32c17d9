"""Segmentor = BiSeNetV2 backbone + FCN decode head + 4 FCN aux heads (mmseg's EncoderDecoder,
docs/reproduction.md#network).

A plain nn.Module: no Lightning, Hydra or file access, so it can be built, exported and tested alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from bisenet_pl.models.bisenetv2 import BiSeNetV2
from bisenet_pl.models.heads import FCNHead
from bisenet_pl.models.layers import Resize


class Segmentor(nn.Module):
    """BiSeNetV2 + decode head (on backbone output 0) + aux heads (on outputs 1..4).

    Forward contract:
    - train mode: `(decode_logits, [aux_logits x 4])`, each at its own input's resolution (the loss
      upsamples them to label size, docs/reproduction.md#loss); the list is empty without aux heads.
    - eval mode: decode logits bilinearly upsampled to the input's H, W (`align_corners` as given,
      False for mmseg): mmseg's first resize in `whole` inference (docs/reproduction.md#test-time).
    - `forward_logits(x)`: decode logits at 1/8 in any mode (FLOP counting, fast inference).

    State-dict keys are mmseg's with `auxiliary_head.` renamed to `aux_heads.` (docs/reproduction.md#network).
    All parameters are initialised here as mmseg's Runner leaves them (docs/reproduction.md#init); in
    particular the
    aux heads' `conv_seg` keeps PyTorch's default init (see `FCNHead`).
    """

    #: The checkpoint's meta (classes, palette, mean, std): set by `load_model`, absent otherwise.
    meta: dict[str, Any]

    def __init__(
        self,
        num_classes: int = 19,
        aux_heads: bool = True,
        head_dropout: float = 0.1,
        align_corners: bool = False,
        detail_channels: Sequence[int] = (64, 64, 128),
        semantic_channels: Sequence[int] = (16, 32, 64, 128),
        semantic_expansion_ratio: int = 6,
        bga_channels: int = 128,
        decode_channels: int = 1024,
        aux_channels: Sequence[int] = (16, 64, 256, 1024),
    ) -> None:
        super().__init__()
        if aux_heads and len(aux_channels) != len(semantic_channels):
            raise ValueError(
                f"aux_channels needs one entry per semantic stage ({len(semantic_channels)}), "
                f"got {len(aux_channels)}"
            )
        self._config: dict[str, Any] = {
            "num_classes": int(num_classes),
            "aux_heads": bool(aux_heads),
            "head_dropout": float(head_dropout),
            "align_corners": bool(align_corners),
            "detail_channels": [int(c) for c in detail_channels],
            "semantic_channels": [int(c) for c in semantic_channels],
            "semantic_expansion_ratio": int(semantic_expansion_ratio),
            "bga_channels": int(bga_channels),
            "decode_channels": int(decode_channels),
            "aux_channels": [int(c) for c in aux_channels],
        }
        self.num_classes = int(num_classes)
        self.align_corners = bool(align_corners)
        self.is_fused = False

        self.backbone = BiSeNetV2(
            in_channels=3,
            detail_channels=detail_channels,
            semantic_channels=semantic_channels,
            semantic_expansion_ratio=semantic_expansion_ratio,
            bga_channels=bga_channels,
            align_corners=align_corners,
        )
        # decode head: in_index 0, one conv, Normal(0, 0.01) conv_seg (docs/reproduction.md#heads)
        self.decode_head = FCNHead(
            bga_channels, decode_channels, num_convs=1, num_classes=num_classes, dropout=head_dropout
        )
        # aux heads: in_index 1..4, two convs, PyTorch-default conv_seg (docs/reproduction.md#heads)
        self.aux_heads = nn.ModuleList()
        if aux_heads:
            for in_ch, ch in zip(semantic_channels, aux_channels, strict=True):
                self.aux_heads.append(
                    FCNHead(
                        in_ch,
                        ch,
                        num_convs=2,
                        num_classes=num_classes,
                        dropout=head_dropout,
                        conv_seg_std=None,
                    )
                )
        self.resize = Resize(align_corners=align_corners)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain ints/floats/bools/lists: `Segmentor(**m.config)` rebuilds m."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Decode-head logits at 1/8 of the input (no upsample), in any mode."""
        return self.decode_head(self.backbone(x)[0])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The decode head's features before its classifier (`decode_head.classify` maps them to logits)."""
        return self.decode_head.features(self.backbone(x)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.backbone(x)
        logits = self.decode_head(feats[0])
        if self.training:
            aux = [head(feats[i + 1]) for i, head in enumerate(self.aux_heads)]
            return logits, aux
        return self.resize(logits, x.shape[2:])

    def inference_copy(self, fuse: bool = True) -> Segmentor:
        """A deep copy for inference: eval mode, no aux heads (11 of the 15 M parameters, unused at
        inference), BN folded into the convs if `fuse`. The original stays trainable and savable."""
        net = copy.deepcopy(self).eval()
        net.aux_heads = nn.ModuleList()
        net._config = {**net._config, "aux_heads": False}  # a saved copy must describe itself
        if fuse:
            net.fuse()
        return net

    def heavy_modules(self) -> dict[str, bool]:
        """Sub-module paths worth running in reduced precision, each with whether it hands fp32 back.

        They carry 91 % of the MACs: the detail branch after its first conv (the first conv sees the raw
        image: 1 % of the MACs but the most rounding-sensitive layer), the BGA's final 3x3 conv and the
        decode head's 3x3 convs. The semantic branch (many small, depthwise layers: 6 % of the MACs but,
        rounded, half of bf16's argmax flips), the BGA's gating and the classifier stay fp32. The paths
        are derived from the modules themselves, so renaming a layer cannot silently break the fast path.
        """
        names = {id(m): name for name, m in self.named_modules()}
        detail = self.backbone.detail.detail_branch
        first_stage = cast(nn.Sequential, detail[0])
        heavy: dict[str, bool] = {names[id(m)]: False for m in list(first_stage)[1:]}
        for i, stage in enumerate(list(detail)[1:], start=1):
            heavy[names[id(stage)]] = i == len(detail) - 1
        heavy[names[id(self.backbone.bga.conv)]] = True
        heavy[names[id(self.decode_head.convs)]] = True
        return heavy

    def sync_bn_heads(self) -> Segmentor:
        """Convert the heads' BN to SyncBatchNorm, leaving the backbone's plain BN; returns self.

        This is mmseg's actual setup (docs/reproduction.md#schedule): the config's SyncBN reaches only the
        heads,
        the backbone's blocks build plain per-GPU BN. Lightning's `sync_batchnorm=True` would convert
        the backbone too, so call this instead (multi-GPU DDP only: SyncBatchNorm needs CUDA there).
        State-dict keys and values are unchanged.
        """
        self.decode_head = nn.SyncBatchNorm.convert_sync_batchnorm(self.decode_head)
        for i, head in enumerate(self.aux_heads):
            self.aux_heads[i] = nn.SyncBatchNorm.convert_sync_batchnorm(head)
        return self

    @torch.no_grad()
    def fuse(self) -> Segmentor:
        """Fold every BatchNorm into the conv before it, in place; returns self, in eval mode.

        For deployment: outputs equal the unfused eval model to ~1e-6 (fp32). The CEBlock's `gap.1` BN
        (after the global pool, before the 1x1 `conv_gap`) is folded into `conv_gap`'s conv, exactly.
        The aux heads are kept and fused too (nothing is dropped), so `aux_heads` stays a valid list;
        they are unused at inference. A fused model has no BN layers, so training it again is not
        meaningful; its `state_dict` keys differ from the unfused ones (no `bn.*`, conv biases added),
        and `save_checkpoint` refuses it: save before fusing.
        """
        self.eval()
        if self.is_fused:
            return self
        self.backbone.fuse()
        self.decode_head.fuse()
        for head in self.aux_heads:
            cast(FCNHead, head).fuse()
        self.is_fused = True
        return self


__all__ = ["Segmentor"]
