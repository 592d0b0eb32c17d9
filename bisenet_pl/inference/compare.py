"""Two nets on one labelled split: each one's mIoU through the evaluation's path and metric, and how often
they agree. The INT8 export's accuracy gate (`deploy.export.quantize.export_int8(measure=...)`) and the
deployment benchmark measure candidates against fp32 with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from bisenet_pl.deploy.export.quantize import DEFAULT_MAX_MIOU_DROP, GateNumbers
from bisenet_pl.errors import ConfigError
from bisenet_pl.evaluation.agreement import label_agreement
from bisenet_pl.evaluation.metrics import SegmentationMetric
from bisenet_pl.inference.modes import InferenceConfig, Net, segment

if TYPE_CHECKING:
    from torch.utils.data import Dataset


@torch.no_grad()
def compare_on_split(
    reference: Net,
    candidate: Net,
    dataset: Dataset,
    num_classes: int,
    ignore_index: int,
    inference: InferenceConfig,
    split: str,
    max_miou_drop: float = DEFAULT_MAX_MIOU_DROP,
    limit: int | None = None,
) -> GateNumbers:
    """Both nets' mIoU on the labelled `dataset` (the evaluation's path and metric) and their argmax
    agreement, in one pass over the images."""
    metrics = [SegmentationMetric(num_classes=num_classes, ignore_index=ignore_index) for _ in range(2)]
    n = len(dataset)  # type: ignore[arg-type]
    n = min(n, int(limit)) if limit else n
    if n == 0:
        raise ConfigError(f"gate: the {split} split has no labelled images to measure the INT8 model on")
    same = 0.0
    pixels = 0
    for i in range(n):
        item = dataset[i]
        if "label" not in item:
            raise ConfigError(f"gate: {item.get('image_path', split)} has no label; the gate needs labels")
        x, label = item["image"][None].float(), item["label"][None]
        size = tuple(label.shape[-2:])
        original = item.get("original")
        original = original[None] if original is not None else None
        preds = [segment(net, x, size, inference, original).argmax(1) for net in (reference, candidate)]
        for metric, pred in zip(metrics, preds, strict=True):
            metric.update(pred, label)
        same += label_agreement([preds[0]], [preds[1]]) * preds[0].numel()
        pixels += preds[0].numel()
    fp32, int8 = (float(m.compute()["mIoU"]) for m in metrics)
    return GateNumbers(split, n, fp32, int8, fp32 - int8, 100.0 * same / max(pixels, 1), float(max_miou_drop))


__all__ = ["compare_on_split"]
