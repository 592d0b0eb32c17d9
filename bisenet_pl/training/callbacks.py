"""Callbacks with side effects on disk or in dashboards; all of them act on rank zero only."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from bisenet_pl.errors import CheckpointError, TrainingDiverged
from bisenet_pl.evaluation.metrics import format_results_table, results_to_jsonable

log = logging.getLogger(__name__)


def _class_names(pl_module: pl.LightningModule) -> list[str]:
    """The class names of a `SegmentationModule` (these callbacks serve no other module)."""
    return list(cast(Sequence[str], pl_module.class_names))


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
        names = _class_names(pl_module)
        from rich.console import Console

        Console().print(format_results_table(results, names))
        payload = {
            **self.info,
            "global_step": int(trainer.global_step),
            "world_size": int(trainer.world_size),
            "inference": vars(pl_module.inference_cfg) if hasattr(pl_module, "inference_cfg") else None,
            "results": results_to_jsonable(results, names),
        }
        from bisenet_pl.checkpoints.io import atomic_write_text

        path = atomic_write_text(
            json.dumps(payload, indent=2, default=_jsonable), self.output_dir / self.filename
        )
        log.info("results written to %s", path)
        if "confusion_matrix" in results:  # raw counts beside results.json, for the report
            from bisenet_pl.reporting.confusion import write_confusion_csv

            write_confusion_csv(self.output_dir, results["confusion_matrix"], names)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written with `atomic_torch_save`: temp file beside the target, fsync, rename.

    Every checkpoint of a run (`last.ckpt`, iteration and interrupt checkpoints) goes through it, so a run
    killed while saving always resumes from a whole file. Two refusals keep the previous file intact:
    weights with NaN/inf values (a diverged run must not overwrite good weights) and a full or read-only
    disk (one message naming the folder and the space needed, not a zip writer's traceback).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        from bisenet_pl.checkpoints import atomic_torch_save
        from bisenet_pl.checkpoints.checks import non_finite_tensors

        path = Path(path)
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise TrainingDiverged(
                f"training diverged: at step {checkpoint.get('global_step', '?')} {len(bad)} tensors of the "
                f"model are NaN or infinite (first: {', '.join(bad[:3])}). Not writing {path}: the previous "
                "checkpoint is kept. Lower module.lr or check the labels"
            )
        try:
            atomic_torch_save(checkpoint, path)
        except (OSError, RuntimeError) as err:
            raise CheckpointError(_write_failure(path, checkpoint, err)) from None


def _write_failure(path: Path, checkpoint: dict[str, Any], err: BaseException) -> str:
    """One line for a checkpoint that could not be written: which folder, why, how much space it needs.
    torch's zip writer wraps the OSError in a RuntimeError, so the cause is searched for."""
    import shutil

    import torch

    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    text = str(err)
    full = (isinstance(cause, OSError) and cause.errno == errno.ENOSPC) or "No space left" in text
    denied = isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EROFS, errno.EPERM)
    folder = path.parent
    if full:
        need = sum(t.numel() * t.element_size() for t in _tensors(checkpoint) if isinstance(t, torch.Tensor))
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        return (
            f"cannot write checkpoint {path}: the disk is full ({free / 2**20:.0f} MiB free in {folder}, "
            f"about {need / 2**20:.0f} MiB needed); the previous checkpoint is kept. Free some space and "
            f"resume with `python -m bisenet_pl.train resume={folder.parent}`"
        )
    if denied and isinstance(cause, OSError):  # `denied` implies an OSError
        return f"cannot write checkpoint {path}: {folder} is not writable ({cause.strerror})"
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else text.splitlines()[0]
    return f"cannot write checkpoint {path}: {reason}"


def _tensors(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [t for v in node.values() for t in _tensors(v)]
    if isinstance(node, list | tuple):
        return [t for v in node for t in _tensors(v)]
    return [node]


class _SavesFinalStep(pl.callbacks.ModelCheckpoint):
    """A checkpoint callback that also saves when training ends between two intervals, so the run's
    final weights are always on disk (mmseg saves its last iteration the same way)."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._should_skip_saving_checkpoint(trainer) or trainer.global_step == 0:
            return
        candidates = self._monitor_candidates(trainer)
        if self.save_top_k != 0:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)


class IterationCheckpoint(_SavesFinalStep):
    """mmseg's iteration checkpoints (`iter_<step>.ckpt` every interval, all kept) and one at the end."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int, filename: str = "iter_{step:06d}"):
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            every_n_train_steps=every_n_train_steps,
            save_top_k=-1,
            save_last=False,
            auto_insert_metric_name=False,
            save_on_train_epoch_end=False,
        )


class LastCheckpoint(_SavesFinalStep):
    """`last.ckpt` only, on its own (shorter) interval, always the one up-to-date file of its run.

    The version counter is off: a resumed run overwrites `last.ckpt` instead of starting `last-v1.ckpt`
    beside a stale one. A separate class so that its state key differs from the iteration checkpoint's
    even when both use the same interval (Lightning refuses two checkpoint callbacks with one key).
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 1000) -> None:
        super().__init__(
            dirpath=dirpath,
            every_n_train_steps=every_n_train_steps,
            save_top_k=0,
            save_last=True,
            auto_insert_metric_name=False,
            save_on_train_epoch_end=False,
            enable_version_counter=False,
        )


class InterruptCheckpoint(pl.Callback):
    """`last-interrupted.ckpt` when training stops on an exception (SIGTERM/SIGINT included), but only if
    this process trained at least one step: a start that fails before training (a typo, a bad file)
    must not replace a real checkpoint with untrained weights.

    Not Lightning's `OnExceptionCheckpoint`: its mere presence makes `fit(ckpt_path=None)` resume from
    the folder's newest file, and a fresh start must be fresh (`bisenet_pl.training.run_folder`).
    """

    def __init__(self, dirpath: str | Path, filename: str = "last-interrupted") -> None:
        super().__init__()
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._start_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_step = trainer.global_step

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._start_step is None or trainer.global_step <= self._start_step:
            log.info("stopped before training a step: no interrupt checkpoint written")
            return
        try:
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state: a resume point
        except (CheckpointError, TrainingDiverged) as err:
            log.error("%s", err)


class ParameterSummary(pl.Callback):
    """The network's parameter counts in one log line when fit starts, in place of Lightning's table.

    Lightning's summary table (`Trainer(enable_model_summary=True)`) has a FLOPs column that it fills
    by running the module's `example_input_array`; ours defines none (the input size is the data's),
    so the column would read 0. MACs per input size: `python -m bisenet_pl.benchmark`.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from bisenet_pl.models.complexity import count_parameters

        network: nn.Module = getattr(pl_module, "model", pl_module)
        counts = count_parameters(network)
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        line = f"model: {type(network).__name__}, {counts['total'] / 1e6:.2f} M parameters"
        if trainable != counts["total"]:
            line += f" ({trainable / 1e6:.2f} M trainable)"
        if "inference" in counts:
            line += (
                f"; {counts['inference'] / 1e6:.2f} M at inference (backbone + decode head), "
                f"{(counts['total'] - counts['inference']) / 1e6:.2f} M in the aux heads (training only)"
            )
        log.info(line)


class SpeedMonitor(pl.Callback):
    """Training images/s (global), the data wait share and, on GPU, the peak allocated memory in MB.

    `train/data_wait_share`: the share of the wall time between two steps' starts that the training loop
    spent waiting in `next()` on the train loader (`TimedResumableLoader` measures it), averaged since the
    last logged step and shown in the progress line. When each step's share stays above `warn_share` for
    `warn_steps` steps in a row, one warning names the fixes: more `data.num_workers`, or the decoded-frame
    cache (`python -m bisenet_pl.data.cache`, then `data.cache=<dir>`).
    """

    def __init__(
        self, log_every_n_steps: int | None = None, warn_share: float = 0.2, warn_steps: int = 50
    ) -> None:
        super().__init__()
        self.log_every_n_steps = log_every_n_steps
        self.warn_share = float(warn_share)
        self.warn_steps = int(warn_steps)
        self._t0: float | None = None
        self._images = 0
        # data wait: the previous step's start time and the loader's wait total then
        self._last_start: float | None = None
        self._last_wait = 0.0
        self._window_wait = self._window_time = 0.0
        self._steps_above = 0
        self.warned = False
        #: the last step's data wait share (None before the second step)
        self.step_share: float | None = None

    @staticmethod
    def _wait_total(trainer: pl.Trainer) -> float | None:
        clock = getattr(getattr(trainer, "train_dataloader", None), "data_wait", None)
        total = getattr(clock, "total", None)
        return float(total) if total is not None else None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ):
        import time

        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        total = self._wait_total(trainer)
        if total is None:
            return
        if self._last_start is not None and now > self._last_start:
            wait, interval = max(total - self._last_wait, 0.0), now - self._last_start
            self.step_share = min(wait / interval, 1.0)
            self._window_wait += wait
            self._window_time += interval
            self._check_share(trainer, self.step_share)
        self._last_start, self._last_wait = now, total

    def _check_share(self, trainer: pl.Trainer, share: float) -> None:
        self._steps_above = self._steps_above + 1 if share > self.warn_share else 0
        if self.warned or self._steps_above < self.warn_steps:
            return
        self.warned = True
        if not trainer.is_global_zero:
            return
        datamodule = getattr(trainer, "datamodule", None)
        workers = getattr(getattr(trainer, "train_dataloader", None), "num_workers", "?")
        cache = getattr(datamodule, "cache", None)
        from bisenet_pl.data.datamodule import available_cores

        fixes = f"raise data.num_workers (now {workers} per device, {available_cores()} CPU cores here)" + (
            ""
            if cache
            else ", or decode the dataset once with `python -m bisenet_pl.data.cache data.root=<root>` "
            "and train with data.cache=<its folder>"
        )
        log.warning(
            "the training loop waited for data %.0f %% of each step for the last %d steps (over %.0f %%): "
            "the data loader, not the network, sets the speed. To fix it, %s.",
            100 * share,
            self.warn_steps,
            100 * self.warn_share,
            fixes,
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        import time

        import torch

        self._images += int(batch["image"].shape[0]) * trainer.world_size
        bs = int(batch["image"].shape[0])
        if self._window_time > 0:
            share = self._window_wait / self._window_time
            pl_module.log("train/data_wait_share", share, on_step=True, prog_bar=True, batch_size=bs)
        # Lightning's logger connector sets this Trainer attribute; the class does not declare it.
        every = self.log_every_n_steps or trainer.log_every_n_steps  # type: ignore[attr-defined]
        if self._t0 is None or trainer.global_step % max(every, 1):
            return
        self._window_wait = self._window_time = 0.0
        elapsed = time.perf_counter() - self._t0
        if elapsed > 0:
            pl_module.log("train/images_per_s", self._images / elapsed, on_step=True, batch_size=bs)
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            mem = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
            pl_module.log("train/peak_mem_mb", mem, on_step=True, batch_size=bs)
        self._t0, self._images = time.perf_counter(), 0


class WandbPredictions(pl.Callback):
    """Every validation: a fixed set of val images with ground truth and prediction as W&B masks, and the
    per-class IoU as a `wandb.Table`; with a TensorBoard logger the same images as panels (image | ground
    truth | prediction). After the final test: the normalised confusion matrix as a picture (and, for W&B,
    its raw counts as a table). Rank zero only; does nothing without a W&B or TensorBoard logger."""

    def __init__(self, num_images: int = 4, max_size: int = 512) -> None:
        super().__init__()
        self.num_images = num_images
        self.max_size = max_size
        self._samples: list[tuple[Any, Any, Any, str]] = []

    @staticmethod
    def _wandb_loggers(trainer: pl.Trainer) -> list[Any]:
        from lightning.pytorch.loggers import WandbLogger

        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    @staticmethod
    def _tensorboard_loggers(trainer: pl.Trainer) -> list[Any]:
        from lightning.pytorch.loggers import TensorBoardLogger

        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

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
        if not trainer.is_global_zero or batch_idx >= self.num_images:
            return
        if not (self._wandb_loggers(trainer) or self._tensorboard_loggers(trainer)):
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
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        self._tensorboard_panels(trainer, pl_module)
        loggers = self._wandb_loggers(trainer)
        if not loggers:
            self._samples = []
            return
        import wandb

        names = _class_names(pl_module)
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

    def _tensorboard_panels(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import numpy as np

        from bisenet_pl.inference.visualize import colorize

        palette = getattr(pl_module, "palette", None) or []
        for lg in self._tensorboard_loggers(trainer):
            for i, (img, gt, pred, name) in enumerate(self._samples):
                panel = np.concatenate([img, colorize(gt, palette), colorize(pred, palette)], axis=1)
                lg.experiment.add_image(
                    f"val/predictions/{i}_{name}", panel, trainer.global_step, dataformats="HWC"
                )

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = getattr(pl_module, "test_results", None)
        wandb_loggers, tb_loggers = self._wandb_loggers(trainer), self._tensorboard_loggers(trainer)
        if results is None or "confusion_matrix" not in results or not (wandb_loggers or tb_loggers):
            return
        import io

        import numpy as np
        from PIL import Image

        from bisenet_pl.reporting.figures import confusion_heatmap

        names = _class_names(pl_module)
        counts = results["confusion_matrix"].numpy()
        picture = np.asarray(Image.open(io.BytesIO(confusion_heatmap(names, counts))).convert("RGB"))
        for lg in tb_loggers:
            lg.experiment.add_image("test/confusion_matrix", picture, trainer.global_step, dataformats="HWC")
        if wandb_loggers:
            import wandb

            rows = [[n, *map(int, r)] for n, r in zip(names, counts.tolist(), strict=True)]
            payload = {
                "test/confusion_matrix": wandb.Image(picture, caption="rows: label; each row normalised"),
                "test/confusion_counts": wandb.Table(columns=["label", *names], data=rows),
                "trainer/global_step": trainer.global_step,
            }
            for lg in wandb_loggers:
                lg.experiment.log(payload)


def _nan_to_none(value: float) -> float | None:
    return None if value != value else value
