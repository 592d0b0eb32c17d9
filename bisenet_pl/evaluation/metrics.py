"""Evaluation metric: mmseg's IoUMetric as one dataset-level confusion matrix (docs/reproduction.md#metric,
docs/libraries.md).

Why a custom metric: mmseg sums intersection / union / prediction / label areas over the *whole* val set
and takes ``nanmean`` over classes, so a class absent from both prediction and labels is NaN and excluded,
while a class that is only predicted (false positives) scores 0 and is included. torchmetrics'
``MulticlassJaccardIndex(average="none")`` reports absent classes as 0 and ``segmentation.MeanIoU`` is
per-image and rejects 255 (docs/libraries.md): neither is the reported number. A C×C confusion matrix holds
all four areas (diagonal = intersection, row sums = label area, column sums = prediction area), is
summed across processes (``dist_reduce_fx="sum"``), and equals cityscapesscripts' pixel-level evaluation.

Values are returned unrounded, in percent; mmseg rounds mIoU/aAcc to 2 decimals only for its report, which
``format_results_table`` does too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torchmetrics
from rich.table import Table
from torch import Tensor


class SegmentationMetric(torchmetrics.Metric):
    """Dataset-level confusion matrix -> mIoU, aAcc, mAcc and per-class IoU/Acc (docs/reproduction.md#metric).

    ``update(pred, target)``: integer class maps of equal shape, (N,H,W) or (H,W), at the label's original
    resolution. Pixels whose target is ``ignore_index`` are dropped. Any other target outside
    ``[0, num_classes)`` raises ``ValueError`` (a label-mapping bug). A predicted value outside
    ``[0, num_classes)`` on a counted pixel also raises ``ValueError``: mmseg's histograms would count such
    a pixel in the label area but in no prediction bin, which a C×C matrix cannot represent, so it is
    refused rather than silently miscounted.

    ``compute()`` (call it on every rank: it all-reduces) returns a dict:
    ``mIoU``, ``aAcc``, ``mAcc`` (float, percent; NaN if nothing was counted),
    ``IoU`` and ``Acc`` (float64 tensors (C,), percent, NaN where the class has no union resp. no label
    pixels) and ``confusion_matrix`` (int64 (C, C), rows = target, columns = prediction).
    mIoU = nanmean of IoU over classes, i.e. over classes with union > 0.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: Tensor

    def __init__(self, num_classes: int = 19, ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} must not be a class index (0..{num_classes - 1}).")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape; "
                "resize the logits to the label size and argmax before updating."
            )
        if pred.is_floating_point() or target.is_floating_point() or pred.is_complex():
            raise ValueError(
                "SegmentationMetric.update expects integer class maps (argmax the logits first)."
            )
        c = self.num_classes
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).to(device=target.device, dtype=torch.long)
        keep = target != self.ignore_index
        target = target[keep]
        pred = pred[keep]
        if target.numel() == 0:
            return
        t_min, t_max = int(target.min()), int(target.max())
        if t_min < 0 or t_max >= c:
            raise ValueError(
                f"Target contains values outside [0, {c}) other than ignore_index {self.ignore_index} "
                f"(min {t_min}, max {t_max}); map label ids to train ids first."
            )
        p_min, p_max = int(pred.min()), int(pred.max())
        if p_min < 0 or p_max >= c:
            raise ValueError(f"Prediction contains values outside [0, {c}) (min {p_min}, max {p_max}).")
        counts = torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)
        self.confmat += counts.to(self.confmat.device)

    def compute(self) -> dict[str, Any]:
        return metrics_from_confusion_matrix(self.confmat)


def metrics_from_confusion_matrix(confmat: Tensor) -> dict[str, Any]:
    """mmseg's IoUMetric numbers from a (C, C) confusion matrix (rows = target, columns = prediction)."""
    cm = confmat.detach().to(device="cpu", dtype=torch.float64)
    intersect = cm.diagonal()
    area_label = cm.sum(dim=1)
    area_pred = cm.sum(dim=0)
    union = area_pred + area_label - intersect
    nan = torch.tensor(math.nan, dtype=torch.float64)
    iou = torch.where(union > 0, intersect / union.clamp_min(1), nan) * 100.0
    acc = torch.where(area_label > 0, intersect / area_label.clamp_min(1), nan) * 100.0  # = recall
    precision = torch.where(area_pred > 0, intersect / area_pred.clamp_min(1), nan) * 100.0
    both = area_label + area_pred
    dice = torch.where(both > 0, 2 * intersect / both.clamp_min(1), nan) * 100.0  # = F1
    total = area_label.sum()
    aacc = (intersect.sum() / total * 100.0).item() if total > 0 else math.nan
    out = {
        "mIoU": torch.nanmean(iou).item(),
        "aAcc": aacc,
        "mAcc": torch.nanmean(acc).item(),
        "mDice": torch.nanmean(dice).item(),
        "IoU": iou,
        "Acc": acc,
        "Precision": precision,
        "Recall": acc.clone(),
        "Dice": dice,
        "confusion_matrix": confmat.detach().to(device="cpu", dtype=torch.long).clone(),
    }
    if cm.shape[0] == 2:  # binary segmentation: the foreground class's IoU is the number people quote
        out["fgIoU"] = iou[1].item()
    return out


def _fmt(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.2f}"


def _as_list(v: Any) -> list[float]:
    if isinstance(v, Tensor):
        return [float(x) for x in v.tolist()]
    return [float(x) if x is not None else math.nan for x in v]


def format_results_table(results: dict[str, Any], class_names: Sequence[str]) -> Table:
    """A rich table: per-class IoU and Acc (2 decimals, "n/a" for NaN), then mIoU / aAcc / mAcc."""
    iou, acc = _as_list(results["IoU"]), _as_list(results["Acc"])
    if not len(iou) == len(acc) == len(class_names):
        raise ValueError(f"{len(class_names)} class names for {len(iou)} IoU and {len(acc)} Acc values.")
    table = Table(title="per-class results (%)")
    table.add_column("Class")
    table.add_column("IoU", justify="right")
    table.add_column("Acc", justify="right")
    extra: list[str] = [k for k in ("Precision", "Dice") if k in results]
    for key in extra:
        table.add_column("F1 (Dice)" if key == "Dice" else key, justify="right")
    columns = [_as_list(results[k]) for k in extra]
    for row, (name, i, a) in enumerate(zip(class_names, iou, acc, strict=True)):
        table.add_row(str(name), _fmt(i), _fmt(a), *(_fmt(c[row]) for c in columns))
    table.add_section()
    for summary in ("mIoU", "aAcc", "mAcc", "mDice", "fgIoU"):
        if summary in results:
            table.add_row(summary, _fmt(float(results[summary])), "", *([""] * len(extra)))
    return table


def results_to_jsonable(results: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """Plain-Python copy for JSON: floats (None for NaN), per-class dicts, the confusion matrix as lists."""

    def clean(v: float) -> float | None:
        v = float(v)
        return None if math.isnan(v) else v

    iou, acc = _as_list(results["IoU"]), _as_list(results["Acc"])
    if not len(iou) == len(acc) == len(class_names):
        raise ValueError(f"{len(class_names)} class names for {len(iou)} IoU and {len(acc)} Acc values.")
    keys = ("mIoU", "aAcc", "mAcc", "mDice", "fgIoU")
    out: dict[str, Any] = {key: clean(results[key]) for key in keys if key in results}
    extra = {k: _as_list(results[k]) for k in ("Precision", "Recall", "Dice") if k in results}
    out["per_class"] = {
        str(name): {"IoU": clean(i), "Acc": clean(a), **{k: clean(v[row]) for k, v in extra.items()}}
        for row, (name, i, a) in enumerate(zip(class_names, iou, acc, strict=True))
    }
    if "confusion_matrix" in results:
        cm = results["confusion_matrix"]
        out["confusion_matrix"] = cm.tolist() if isinstance(cm, Tensor) else [list(map(int, r)) for r in cm]
    return out
