"""Check 7, the metric: mmseg's IoUMetric against our SegmentationMetric on the same predictions.

Several images of different sizes, ground truth with 255 pixels, one class absent from both labels
and predictions (NaN, excluded from the mean) and one never predicted (IoU 0). The per-class areas
(intersection, union, prediction, label) must be equal exactly; per-class IoU and Acc, mIoU and aAcc
equal up to mmseg's float32 arithmetic (its histograms are float32 tensors; ours are int64 counts
divided in float64), and mmseg's rounded `evaluate()` summary must equal ours rounded the same way.
"""

from __future__ import annotations

import math

import ours
import torch


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    preds, gts = [], []
    for h, w in ((64, 128), (97, 61), (128, 256), (50, 50)):
        gt = torch.randint(0, 19, (h // 4 + 1, w // 4 + 1), generator=g)
        gt = gt.repeat_interleave(4, 0).repeat_interleave(4, 1)[:h, :w]
        gt[gt == 7] = 5  # class 7 absent from the labels ...
        pred = gt.clone()
        noise = torch.rand(h, w, generator=g) < 0.3
        pred[noise] = torch.randint(0, 19, (int(noise.sum()),), generator=g)
        pred[pred == 7] = 6  # ... and from the predictions: NaN, excluded
        pred[pred == 11] = 12  # class 11 never predicted: IoU 0
        pred[(pred == 3) & (torch.rand(h, w, generator=g) < 0.5)] = 16  # class 16 over-predicted
        gt[torch.rand(h, w, generator=g) < 0.1] = 255
        preds.append(pred)
        gts.append(gt)
    return {"preds": preds, "gts": gts}


def test_iou_metric(reference, record, tmp_path):
    data = _data()
    torch.save(data, tmp_path / "metric_input.pt")
    ref = torch.load(
        reference("metric", "--input", str(tmp_path / "metric_input.pt")) / "metric.pt", weights_only=True
    )

    metric = ours.SegmentationMetric(num_classes=19)
    for pred, gt in zip(data["preds"], data["gts"], strict=True):
        metric.update(pred[None], gt[None])
    got = metric.compute()

    cm = got["confusion_matrix"].double()
    inter, label_area, pred_area = cm.diagonal(), cm.sum(1), cm.sum(0)
    ours_areas = [inter, pred_area + label_area - inter, pred_area, label_area]
    area_diff = max(
        float((a - b.double()).abs().max()) for a, b in zip(ours_areas, ref["areas"], strict=True)
    )

    ref_iou, ref_acc = ref["IoU"] * 100, ref["Acc"] * 100
    same_nan = bool(torch.equal(torch.isnan(got["IoU"]), torch.isnan(ref_iou)))
    iou_diff = float((got["IoU"] - ref_iou).nan_to_num(0).abs().max())
    acc_diff = float((got["Acc"] - ref_acc).nan_to_num(0).abs().max())
    miou_ref = float(torch.nanmean(ref_iou))
    f32 = 1e-5  # percent: float32 rounding of a ratio, times 100
    miou_diff = abs(got["mIoU"] - miou_ref)
    aacc_diff = abs(got["aAcc"] - ref["aAcc"] * 100)
    checks = [
        ("per-class areas (I, U, pred, label) max |diff|", area_diff, "0 (exact)", area_diff == 0),
        ("per-class IoU max |diff| (percent)", iou_diff, f"<= {f32:g}", iou_diff <= f32),
        ("per-class Acc max |diff| (percent)", acc_diff, f"<= {f32:g}", acc_diff <= f32),
        ("NaN classes (absent) identical", same_nan, "True", same_nan),
        ("mIoU |diff| (percent)", miou_diff, f"<= {f32:g}", miou_diff <= f32),
        ("aAcc |diff| (percent)", aacc_diff, f"<= {f32:g}", aacc_diff <= f32),
    ]
    for key in ("mIoU", "aAcc", "mAcc"):
        ours_rounded = round(got[key], 2)
        checks.append(
            (
                f"evaluate() {key}, rounded (mmseg {ref['summary'][key]:.2f})",
                ours_rounded,
                "equal",
                math.isclose(ours_rounded, ref["summary"][key], abs_tol=1e-4),
            )
        )
    failures = [name for name, value, tol, ok in checks if not record("metric", name, value, tol, ok)]
    assert not failures, failures
