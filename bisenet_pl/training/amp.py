"""mmseg's fp16 row: a *static* loss scale of 512 (docs/reproduction.md#schedule, docs/libraries.md).

mmcv's `Fp16OptimizerHook(loss_scale=512.)` and mmengine's `AmpOptimWrapper(loss_scale=512.)` both
build a GradScaler and call `update(512)` after every step: the scale never grows or shrinks, while
steps whose gradients hold inf/NaN are still skipped by `scaler.step`. torch's GradScaler refuses
`growth_factor=1`/`backoff_factor=1`, so the fixed scale is an override of `update`.
"""

from __future__ import annotations

import torch


class StaticGradScaler(torch.amp.GradScaler):
    """A GradScaler whose scale stays at `loss_scale`; inf/NaN steps are still skipped."""

    def __init__(self, loss_scale: float = 512.0, device: str = "cuda") -> None:
        super().__init__(device=device, init_scale=loss_scale)
        self.loss_scale = float(loss_scale)

    def update(self, new_scale: float | torch.Tensor | None = None) -> None:  # noqa: ARG002 - fixed scale
        super().update(self.loss_scale)
