"""Settings BiSeNetV2 cannot train with, refused before any worker starts or the model is built.

BiSeNetV2's context embedding (the semantic branch's last block, mmseg's `CEBlock`) pools the 1/32
feature map globally and normalises the pooled (N, C, 1, 1) tensor with a BatchNorm: in training that
needs more than one value per channel, so at least 2 images per device. With 1, PyTorch stops inside
BatchNorm ('Expected more than 1 value per channel when training'), after the workers started and the
model was built; mmseg has the same limit. The backbone's BatchNorm is per device (never synced,
as in mmseg), so more devices do not lift it.
"""

from __future__ import annotations

from collections.abc import Sequence

from bisenet_pl.errors import ConfigError

#: The fewest images per device a training step can normalise.
MIN_BATCH_PER_DEVICE = 2


def check_trainable(batch_size: int, crop_size: Sequence[int]) -> None:
    """`ConfigError` with the reason and the fix for a per-device batch or crop training cannot use."""
    if batch_size < MIN_BATCH_PER_DEVICE:
        raise ConfigError(
            f"data.batch_size={batch_size}: BiSeNetV2 needs at least {MIN_BATCH_PER_DEVICE} images per "
            "device to train (its context block normalises a globally pooled feature over the batch; "
            "mmseg has the same limit). Set data.batch_size=2 or more (it is per device); to save "
            "memory, lower data.crop_size instead"
        )
    if any(int(v) < 1 for v in crop_size):
        raise ConfigError(f"data.crop_size={list(crop_size)}: a crop needs a positive height and width")
