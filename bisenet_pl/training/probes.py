"""Callbacks the prepared GPU check adds to a real `train` run (`+callbacks.<name>._target_=...`), apart
from the check itself (benchmarks/gpu_check.py): what one step costs, and whether SyncBN reached only
the heads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl


class StepRecorder(pl.Callback):
    """Per step: wall time from batch start to batch end, the wait for the batch before it, and the loss;
    written as JSON on rank zero when training ends (read by `row_result`)."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = Path(out)
        self.step_s: list[float] = []
        self.wait_s: list[float] = []
        self.loss: list[float] = []
        self._start = 0.0
        self._end: float | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        import torch

        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._start = time.perf_counter()
        if self._end is not None:
            self.wait_s.append(self._start - self._end)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        import torch

        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._end = time.perf_counter()
        self.step_s.append(self._end - self._start)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.loss.append(float(loss))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch

        if not trainer.is_global_zero:
            return
        peak = None
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        payload = {"step_s": self.step_s, "wait_s": self.wait_s, "loss": self.loss, "peak_gb": peak}
        self.out.write_text(json.dumps(payload))


class BNSyncProbe(pl.Callback):
    """At the end of a DDP fit: the largest difference across ranks of the heads' and of the backbone's
    BN running means (heads: SyncBN, ~0; backbone: per-GPU BN, clearly non-zero)."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = Path(out)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch

        def spread(prefix: str) -> float:
            means = [
                m.running_mean
                for name, m in pl_module.named_modules()
                if name.startswith(prefix)
                and isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                and m.running_mean is not None
            ]
            flat = torch.cat([t.flatten() for t in means]).float()
            gathered = trainer.strategy.all_gather(flat)
            return float((gathered.max(0).values - gathered.min(0).values).abs().max())

        heads, backbone = spread("model.decode_head"), spread("model.backbone")
        if trainer.is_global_zero:
            self.out.write_text(
                json.dumps(
                    {"heads_max_diff": heads, "backbone_max_diff": backbone, "ok": heads < 1e-4 < backbone}
                )
            )


__all__ = ["BNSyncProbe", "StepRecorder"]
