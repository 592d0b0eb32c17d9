"""Callbacks with side effects on disk or in dashboards; all of them act on rank zero only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from bisenet_pl.evaluation.metrics import format_results_table, results_to_jsonable

log = logging.getLogger(__name__)


class ResultsWriter(pl.Callback):
    """After `trainer.test`, print the per-class table and write `results.json` into the run folder.

    It reads `pl_module.test_results`, which the module sets in `on_test_epoch_end` after every rank
    has joined the confusion-matrix sum; `on_test_end` runs after that hook, on every strategy
    (ddp_spawn included, where the parent process never sees the module's attributes).
    """

    def __init__(
        self, output_dir: str | Path, info: dict[str, Any] | None = None, filename: str = "results.json"
    ):
        super().__init__()
        self.output_dir = Path(output_dir)
        self.info = dict(info or {})
        self.filename = filename

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = getattr(pl_module, "test_results", None)
        if results is None:
            return
        names = list(pl_module.class_names)
        from rich.console import Console

        Console().print(format_results_table(results, names))
        payload = {
            **self.info,
            "global_step": int(trainer.global_step),
            "world_size": int(trainer.world_size),
            "inference": vars(pl_module.inference_cfg) if hasattr(pl_module, "inference_cfg") else None,
            "results": results_to_jsonable(results, names),
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / self.filename
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=_jsonable))
        tmp.replace(path)
        log.info("results written to %s", path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written with `atomic_torch_save`: temp file beside the target, fsync, rename.

    Every checkpoint of a run (`last.ckpt`, iteration and SIGTERM checkpoints) goes through it, so a
    run killed while saving always resumes from a whole file.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        from bisenet_pl.checkpoints import atomic_torch_save

        atomic_torch_save(checkpoint, path)


class LastCheckpoint(pl.callbacks.ModelCheckpoint):
    """`last.ckpt` only, on its own (shorter) interval beside the iteration checkpoints.

    A separate class so that its state key differs from the iteration `ModelCheckpoint`'s even when both
    use the same interval (Lightning refuses two checkpoint callbacks with one key). `train.py` writes
    every checkpoint through `AtomicCheckpointIO`, so a kill mid-write never leaves a corrupt one.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 1000) -> None:
        super().__init__(
            dirpath=dirpath,
            every_n_train_steps=every_n_train_steps,
            save_top_k=0,
            save_last=True,
            auto_insert_metric_name=False,
            save_on_train_epoch_end=False,
        )


class SpeedMonitor(pl.Callback):
    """Training images/s (global) and, on GPU, the peak allocated memory in MB, as mmseg's logger reports."""

    def __init__(self, log_every_n_steps: int | None = None) -> None:
        super().__init__()
        self.log_every_n_steps = log_every_n_steps
        self._t0: float | None = None
        self._images = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ):
        import time

        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        import time

        import torch

        self._images += int(batch["image"].shape[0]) * trainer.world_size
        every = self.log_every_n_steps or trainer.log_every_n_steps
        if self._t0 is None or trainer.global_step % max(every, 1):
            return
        elapsed = time.perf_counter() - self._t0
        bs = int(batch["image"].shape[0])
        if elapsed > 0:
            pl_module.log("train/images_per_s", self._images / elapsed, on_step=True, batch_size=bs)
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            mem = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
            pl_module.log("train/peak_mem_mb", mem, on_step=True, batch_size=bs)
        self._t0, self._images = time.perf_counter(), 0


class WandbPredictions(pl.Callback):
    """Every validation: a fixed set of val images with ground truth and prediction as W&B masks, and the
    per-class IoU as a `wandb.Table`. Rank zero only; does nothing without a W&B logger."""

    def __init__(self, num_images: int = 4, max_size: int = 512) -> None:
        super().__init__()
        self.num_images = num_images
        self.max_size = max_size
        self._samples: list[tuple[Any, Any, Any, str]] = []

    @staticmethod
    def _wandb_loggers(trainer: pl.Trainer) -> list[Any]:
        from lightning.pytorch.loggers import WandbLogger

        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._samples = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.is_global_zero or batch_idx >= self.num_images or not self._wandb_loggers(trainer):
            return
        if not isinstance(outputs, dict) or "pred" not in outputs:
            return
        from bisenet_pl.data.preprocess import denormalize
        from bisenet_pl.inference.visualize import shrink

        image = denormalize(batch["image"][0])
        label = batch["label"][0].cpu().numpy().astype("uint8")
        pred = outputs["pred"][0].cpu().numpy().astype("uint8")
        image, label, pred = shrink(image, label, pred, self.max_size)
        name = batch.get("name", [f"val_{batch_idx}"])[0]
        self._samples.append((image, label, pred, str(name)))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = self._wandb_loggers(trainer)
        if not trainer.is_global_zero or not loggers or trainer.sanity_checking:
            return
        import wandb

        names = list(pl_module.class_names)
        class_labels = {i: n for i, n in enumerate(names)}
        class_labels[255] = "ignore"
        images = [
            wandb.Image(
                img,
                masks={
                    "predictions": {"mask_data": pred, "class_labels": class_labels},
                    "ground_truth": {"mask_data": gt, "class_labels": class_labels},
                },
                caption=name,
            )
            for img, gt, pred, name in self._samples
        ]
        payload: dict[str, Any] = {"trainer/global_step": trainer.global_step}
        if images:
            payload["val/predictions"] = images
        results = getattr(pl_module, "val_results", None)
        if results is not None:
            rows = [
                [n, _nan_to_none(float(iou)), _nan_to_none(float(acc))]
                for n, iou, acc in zip(names, results["IoU"], results["Acc"], strict=True)
            ]
            payload["val/per_class"] = wandb.Table(columns=["class", "IoU", "Acc"], data=rows)
        for lg in loggers:
            lg.experiment.log(payload)
        self._samples = []


def _nan_to_none(value: float) -> float | None:
    return None if value != value else value
