"""Fine-tuning through the Python API: a network from `load_model` (eval mode) trains inside `fit`.

Lightning restores each sub-module's mode as it found it when fit started, so without the module's own
switch to train mode the loaded network would run its training steps in eval mode: one output instead of
five, and BN on its running statistics.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bisenet_pl.checkpoints import load_model, save_checkpoint
from bisenet_pl.models import Segmentor
from bisenet_pl.training.losses import MultiHeadLoss
from bisenet_pl.training.module import SegmentationModule


class _Fixed(Dataset):
    """Four fixed 64x64 images of 16-pixel blocks, each block's colour its class: learnable in a few steps."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        blocks = torch.randint(0, 4, (4, 4, 4), generator=g)
        self.labels = blocks.repeat_interleave(16, 1).repeat_interleave(16, 2)
        colours = torch.tensor([[-1.5, -1.0, 0.5], [1.0, -0.5, -1.0], [0.0, 1.5, 1.0], [1.5, 1.0, -1.5]])
        self.images = colours[self.labels].permute(0, 3, 1, 2) + 0.1 * torch.randn(4, 3, 64, 64, generator=g)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


def _bn_means(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([m.running_mean for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])


def test_fit_on_a_load_model_network_trains_it(tmp_path):
    torch.manual_seed(0)
    saved = save_checkpoint(
        Segmentor(
            num_classes=4,
            detail_channels=(8, 8, 16),
            semantic_channels=(8, 16, 16, 16),
            bga_channels=16,
            decode_channels=16,
            aux_channels=(8, 8, 8, 8),
        ),
        tmp_path / "start.ckpt",
    )
    net = load_model(saved)
    assert not net.training and len(net.aux_heads) == 4  # what a user gets back
    before = _bn_means(net).clone()

    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            assert module.model.training  # the network trains in train mode, whatever it came in
            losses.append(float(outputs["loss"]))

    module = SegmentationModule(
        net, MultiHeadLoss(), lr=0.1, warmup_steps=1, max_steps=1000, class_names=list("abcd")
    )
    trainer = pl.Trainer(
        max_steps=30,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(module, DataLoader(_Fixed(), batch_size=2, shuffle=False))

    assert len(losses) == 30
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, (first, last)  # five-head loss falls
    assert not torch.allclose(_bn_means(net), before)  # BN statistics were updated by training batches
