"""The network: plain nn.Modules (no Lightning, Hydra or files). See `Segmentor`."""

from __future__ import annotations

from bisenet_pl.models.bisenetv2 import BiSeNetV2
from bisenet_pl.models.heads import FCNHead
from bisenet_pl.models.segmentor import Segmentor

__all__ = ["BiSeNetV2", "FCNHead", "Segmentor"]
