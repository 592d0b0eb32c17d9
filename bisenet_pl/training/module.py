"""SegmentationModule: mmseg's BiSeNetV2 training recipe as a LightningModule.

The module knows nothing of paths: it gets a network, a loss and plain hyper-parameters, and
hands batches through them. Everything in a Lightning checkpoint it writes is a plain container or a
tensor, so `torch.load(..., weights_only=True)` reads it (docs/libraries.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn

from bisenet_pl.checkpoints.meta import default_meta
from bisenet_pl.data.cityscapes import CLASSES, MEAN, STD
from bisenet_pl.errors import TrainingDiverged
from bisenet_pl.evaluation.metrics import SegmentationMetric
from bisenet_pl.inference.modes import InferenceConfig, segment
from bisenet_pl.training.schedules import Style, build_warmup_poly_scheduler

if TYPE_CHECKING:
    from bisenet_pl.models.segmentor import Segmentor

log = logging.getLogger(__name__)


class _HParams(Protocol):
    """What `save_hyperparameters` stores: `SegmentationModule.__init__`'s arguments but model and loss.

    Lightning types `hparams` as a MutableMapping; at run time it is an AttributeDict, read by attribute.
    """

    lr: float
    momentum: float
    weight_decay: float
    warmup_steps: int
    warmup_ratio: float
    power: float
    min_lr: float
    lr_style: str
    max_steps: int
    sync_bn_heads: bool
    inference: dict[str, Any] | None
    class_names: Sequence[str] | None
    palette: Sequence[Sequence[int]] | None
    ignore_index: int
    test_scale: Sequence[int] | None
    channels_last: bool
    optimizer_impl: str
    compile: bool


class SegmentationModule(pl.LightningModule):
    """Train/validate/test a `Segmentor` with mmseg's SGD + warm-up x poly recipe (docs/reproduction.md#loss).

    Args:
        model: the network (a `Segmentor`); the LightningModule holds it as `self.model`, so the
            Lightning checkpoint's keys are `model.<mmseg-style key>`.
        loss: a `MultiHeadLoss` taking `[decode, aux0..aux3]` logits and the label.
        lr, momentum, weight_decay: SGD, weight decay on every parameter (BN and biases included), as mmseg.
        warmup_steps, warmup_ratio, power, min_lr, lr_style, max_steps: the schedule, stepped every iteration.
        sync_bn_heads: SyncBN in the heads only, and only on GPU with more than one process
        (docs/reproduction.md#bn).
        inference: `InferenceConfig` fields for validation and test (whole image by default).
        class_names: names for the per-class metrics; Cityscapes' 19 by default. `bisenet_pl.train` passes
            the data's own (the class table is the one source of the class count).
        palette: one RGB colour per class for the checkpoint's meta (default: Cityscapes' for 19 classes,
            else distinct colours).
        ignore_index: the label value the metric drops (the data's).
        test_scale: the data's keep-ratio test resize, stored in checkpoints so `Segmenter` reuses it.
        channels_last: NHWC memory format for the network and its inputs: the same arithmetic, faster
            convolutions on recent CPUs (oneDNN) and on tensor-core GPUs under AMP (mmseg: NCHW).
        optimizer_impl: how SGD applies its update: "foreach" (multi-tensor kernels, the default),
            "fused" (one fused kernel per group, where torch has one for the device) or "loop" (one
            parameter at a time, as mmseg). The same update rule, the same hyper-parameters.
        compile: `torch.compile` the network for the training steps (validation and checkpoints use the
            same, uncompiled module: same weights, same state-dict keys). Off by default; tested on CPU
            to give eager's losses within 1e-6 relative over 8 float64 steps
            (tests/training/test_step_speedups.py).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        warmup_steps: int = 1000,
        warmup_ratio: float = 0.1,
        power: float = 0.9,
        min_lr: float = 1e-4,
        lr_style: str = "mmcv",
        max_steps: int = 160000,
        sync_bn_heads: bool = True,
        inference: dict[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        test_scale: Sequence[int] | None = None,
        channels_last: bool = True,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int = 255,
        optimizer_impl: str = "foreach",
        compile: bool = False,
    ) -> None:
        super().__init__()
        if optimizer_impl not in ("foreach", "fused", "loop"):
            raise ValueError(f"module.optimizer_impl must be foreach, fused or loop, got {optimizer_impl!r}")
        self._compiled: nn.Module | None = None
        self.model = model
        self.loss_fn = loss
        self.class_names = list(class_names or CLASSES)
        self.palette = (
            [list(map(int, c)) for c in palette]
            if palette
            else default_meta(len(self.class_names))["palette"]
        )
        inference_options = dict(inference or {})
        if test_scale:
            inference_options.setdefault("box", tuple(test_scale))
        self.inference_cfg = InferenceConfig(**inference_options)
        # Plain values only: checkpoints must stay loadable with weights_only=True.
        self.save_hyperparameters(ignore=["model", "loss"])
        self.val_metric = SegmentationMetric(num_classes=len(self.class_names), ignore_index=ignore_index)
        self.test_metric = SegmentationMetric(num_classes=len(self.class_names), ignore_index=ignore_index)
        #: The last test's full results (per-class IoU and Acc), read by the entry points.
        self.test_results: dict[str, Any] | None = None
        self.val_results: dict[str, Any] | None = None
        self._nchw = False  # the network was switched to NCHW for evaluation

    @property
    def hp(self) -> _HParams:
        """`self.hparams`, typed: the constructor's plain arguments, read by attribute."""
        return cast(_HParams, self.hparams)

    def _optimizer(self) -> LightningOptimizer:
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)  # configure_optimizers returns exactly one
        return optimizer

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Convert the heads' BN to SyncBN before DDP wraps the model, as mmseg's config does.

        Lightning's own `sync_batchnorm` would also convert the backbone, which mmseg never syncs (its
        norm_cfg does not reach the backbone's blocks, docs/reproduction.md#network). SyncBN needs GPUs and
        several processes
        (docs/libraries.md), so anywhere else the heads keep plain BN, which has the same state dict.
        """
        trainer = self.trainer
        if not (self.hp.sync_bn_heads and stage == "fit" and trainer.world_size > 1):
            return
        if trainer.accelerator.__class__.__name__ != "CUDAAccelerator":
            log.info("sync_bn_heads: not on CUDA GPUs, heads keep per-process BN")
            return
        cast("Segmentor", self.model).sync_bn_heads()
        log.info("sync_bn_heads: decode and auxiliary heads use SyncBatchNorm; the backbone does not")

    # ------------------------------------------------------------------ train
    def on_fit_start(self) -> None:
        # A network handed over in eval mode (e.g. from `load_model`) trains in train mode; Lightning
        # records the modes it finds when training starts, so switching here also silences its warning.
        self.model.train()
        if self.hp.channels_last:
            # Module.to takes memory_format at run time; torch's overloads leave it out.
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.hp.compile and self._compiled is None:
            # The compiled module shares the network's parameters and buffers; only training steps use it.
            # (kept out of the module tree: its keys must not enter state_dict or checkpoints)
            self.__dict__["_compiled"] = cast(nn.Module, torch.compile(self.model))
            log.info("module.compile: the network's training steps run through torch.compile")

    def _input(self, image: torch.Tensor) -> torch.Tensor:
        if self.hp.channels_last:
            return image.contiguous(memory_format=torch.channels_last)
        return image

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self._input(image))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        image, label = self._input(batch["image"]), batch["label"]
        network = self._compiled if self._compiled is not None else self.model
        decode, aux = network(image)
        # The heads' low-resolution logits in the network's layout: the loss puts them in its own (the
        # fused MultiHeadLoss works on NHWC maps, impl="mmseg" on NCHW ones).
        losses = self.loss_fn([decode, *aux], label)
        self._stop_if_diverged(losses)
        batch_size = image.shape[0]
        for name, value in losses.items():
            key = "train/loss" if name == "total" else f"train/loss_{name}"
            if name == "acc":
                key = "train/acc_seg"
            self.log(key, value.detach(), on_step=True, prog_bar=name == "total", batch_size=batch_size)
        # The LR this iteration used (the scheduler steps after the optimizer), as mmseg logs it.
        self.log("train/lr", self._optimizer().param_groups[0]["lr"], on_step=True, batch_size=batch_size)
        self.log(
            "train/global_batch",
            float(batch_size * self.trainer.world_size),
            on_step=True,
            batch_size=batch_size,
        )
        return losses["total"]

    def _stop_if_diverged(self, losses: dict[str, torch.Tensor]) -> None:
        """A non-finite loss stops the run at the step it happens, naming the head, before its gradients
        reach the weights: nothing NaN is ever trained into, or saved over, a good checkpoint.

        Under DDP the decision is collective, so every rank stops at the same step. (fp16's static loss
        scale overflows in the gradients, not in the loss: those skipped steps are not caught here.)
        """
        total = losses["total"].detach()
        finite = bool(torch.isfinite(total))
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        if finite:
            return
        heads = [k for k, v in losses.items() if k not in ("total", "acc") and not bool(torch.isfinite(v))]
        raise TrainingDiverged(
            f"training diverged at step {self.global_step}: the loss of "
            f"{', '.join(heads) or 'the total'} is {float(total)} (lr {self._current_lr():.4g}). The "
            "checkpoints on disk hold the last finite weights; lower module.lr or check the labels "
            "(values outside the classes and the ignore index)."
        )

    def _current_lr(self) -> float:
        try:
            return float(self._optimizer().param_groups[0]["lr"])
        except Exception:
            return float("nan")

    def _release_loss_buffers(self) -> None:
        # the fused loss keeps its full-size maps between steps (MultiHeadLoss.release_buffers): not
        # while validating or after training
        release = getattr(self.loss_fn, "release_buffers", None)
        if callable(release):
            release()

    def on_validation_start(self) -> None:
        self._release_loss_buffers()

    def on_train_end(self) -> None:
        self._release_loss_buffers()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning restores each sub-module's mode as it found it at the start of fit, so a network
        # handed over in eval mode (e.g. from `load_model`) would stay in eval: no aux outputs, BN on its
        # running statistics. Training means train mode, whatever mode the network came in.
        if not self.model.training:
            self.model.train()
        if self._nchw:  # evaluated in NCHW since the last step (`_eval_layout`)
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self._nchw = False
        if self.global_step == 0 and batch_idx == 0:
            per_device = int(batch["image"].shape[0])
            log.info(
                "batch: %d per device x %d devices = %d global",
                per_device,
                self.trainer.world_size,
                per_device * self.trainer.world_size,
            )

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        hp = self.hp
        impl = getattr(hp, "optimizer_impl", "foreach")
        optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=hp.lr,
            momentum=hp.momentum,
            weight_decay=hp.weight_decay,
            foreach=impl == "foreach",
            fused=impl == "fused",
        )
        if hp.warmup_steps >= hp.max_steps:
            log.warning(
                "warmup_steps=%d >= max_steps=%d: the whole run stays in the LR warm-up (fine for a smoke "
                "run; a real run of this recipe needs max_steps > warmup_steps)",
                hp.warmup_steps,
                hp.max_steps,
            )
        scheduler = build_warmup_poly_scheduler(
            optimizer,
            base_lr=hp.lr,
            max_steps=hp.max_steps,
            warmup_steps=hp.warmup_steps,
            warmup_ratio=hp.warmup_ratio,
            power=hp.power,
            min_lr=hp.min_lr,
            style=cast(Style, hp.lr_style),  # build_warmup_poly_scheduler checks it
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ eval
    def _evaluate(self, batch: dict[str, Any], metric: SegmentationMetric) -> dict[str, torch.Tensor]:
        """One number per checkpoint (docs/report.md#one-number-per-checkpoint): validation and the final
        test run as `evaluate` does, fp32 without autocast on NCHW tensors, whatever the training precision
        and memory format, so results.json, the report and `evaluate` agree to the last digit."""
        image, label = batch["image"].float().contiguous(), batch["label"]
        original = batch.get("original")  # present when the datamodule keeps originals (ms+flip)
        self._eval_layout()
        with torch.autocast(image.device.type, enabled=False):
            scores = segment(self.model, image, tuple(label.shape[-2:]), self.inference_cfg, original)
        pred = scores.argmax(dim=1)
        metric.update(pred, label)
        return {"pred": pred}

    def _eval_layout(self) -> None:
        """The network in NCHW for evaluation (channels_last gives other last bits); back in training."""
        if self.hp.channels_last and not self._nchw:
            self.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
            self._nchw = True

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, self.val_metric)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, self.test_metric)

    def _log_results(self, prefix: str, metric: SegmentationMetric) -> dict[str, Any]:
        # compute() all-reduces the confusion matrix: every rank must call it (docs/libraries.md).
        results = metric.compute()
        metric.reset()
        self.log(f"{prefix}/mIoU", float(results["mIoU"]), sync_dist=False, rank_zero_only=True)
        self.log(f"{prefix}/aAcc", float(results["aAcc"]), sync_dist=False, rank_zero_only=True)
        for key in ("mDice", "fgIoU"):  # F1 over classes; the foreground IoU of a binary model
            if key in results and results[key] == results[key]:
                self.log(f"{prefix}/{key}", float(results[key]), sync_dist=False, rank_zero_only=True)
        for name, iou in zip(self.class_names, results["IoU"], strict=True):
            iou = float(iou)
            if iou == iou:  # NaN: the class is absent from labels and predictions, nothing to plot
                self.log(f"{prefix}/IoU/{name}", iou, sync_dist=False, rank_zero_only=True)
        return results

    def on_validation_epoch_end(self) -> None:
        self.val_results = self._log_results("val", self.val_metric)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_results("test", self.test_metric)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the Lightning checkpoint self-describing, so `load_model` can rebuild the network."""
        checkpoint["bisenet_pl"] = {
            "model_config": dict(getattr(self.model, "config", {})),
            "meta": {
                "classes": list(self.class_names),
                "palette": [list(c) for c in self.palette],
                "mean": list(MEAN),
                "std": list(STD),
                "test_scale": list(self.hp.test_scale) if self.hp.test_scale else None,
            },
        }
