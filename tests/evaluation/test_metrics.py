"""SegmentationMetric: hand-computed values, NaN semantics, accumulation, DDP sync, cityscapesscripts."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from rich.console import Console

from bisenet_pl.data.cityscapes import CLASSES, LABEL_ID_TO_TRAIN_ID, TRAIN_ID_TO_LABEL_ID
from bisenet_pl.evaluation.metrics import SegmentationMetric, format_results_table, results_to_jsonable

IGN = 255


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    # C = 5. Two 255 pixels (one with an out-of-range prediction, which must simply be dropped).
    target = torch.tensor([[0, 0, 0, 1, 1, 2, IGN, IGN]])
    pred = torch.tensor([[0, 0, 1, 1, 3, 0, 2, 9]])
    return pred, target


def test_hand_computed() -> None:
    m = SegmentationMetric(num_classes=5)
    pred, target = _hand_case()
    m.update(pred, target)
    r = m.compute()
    # class 0: I=2, label 3, pred 3 -> U=4 -> 50%;  class 1: I=1, label 2, pred 2 -> U=3 -> 33.33%
    # class 2: I=0, label 1, pred 0 -> U=1 -> 0%;    class 3: FP only -> U=1 -> 0% (included)
    # class 4: absent from both -> NaN (excluded from the mean)
    iou = r["IoU"]
    assert iou[:4].tolist() == pytest.approx([50.0, 100.0 / 3, 0.0, 0.0], rel=1e-12)
    assert math.isnan(iou[4])
    assert r["mIoU"] == pytest.approx((50.0 + 100.0 / 3) / 4, rel=1e-12)
    assert r["aAcc"] == pytest.approx(50.0, rel=1e-12)  # 3 correct of 6 counted pixels
    acc = r["Acc"]
    assert acc[:3].tolist() == pytest.approx([200.0 / 3, 50.0, 0.0], rel=1e-12)
    assert math.isnan(acc[3]) and math.isnan(acc[4])  # class 3 has no label pixels
    assert r["mAcc"] == pytest.approx((200.0 / 3 + 50.0) / 3, rel=1e-12)
    cm = r["confusion_matrix"]
    assert cm.dtype == torch.int64 and cm.sum() == 6 and cm[0, 0] == 2 and cm[1, 3] == 1 and cm[2, 0] == 1


def test_matches_torchmetrics_macro_jaccard() -> None:
    # docs/libraries.md: MulticlassJaccardIndex(average="macro") = nanmean over classes with union > 0.
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 8, (3, 40, 50), generator=g)
    target[torch.rand(3, 40, 50, generator=g) < 0.1] = IGN
    pred = torch.randint(0, 9, (3, 40, 50), generator=g)  # class 9.. absent; 8 only predicted
    ours = SegmentationMetric(num_classes=19)
    ours.update(pred, target)
    ref = MulticlassJaccardIndex(num_classes=19, ignore_index=IGN, average="macro")
    ref.update(pred, target)
    assert ours.compute()["mIoU"] == pytest.approx(ref.compute().item() * 100, rel=1e-5)


def test_ignore_and_out_of_range() -> None:
    m = SegmentationMetric(num_classes=3)
    m.update(torch.tensor([[1, 2]]), torch.tensor([[IGN, IGN]]))  # nothing counted
    assert m.confmat.sum() == 0
    r = m.compute()
    assert math.isnan(r["mIoU"]) and math.isnan(r["aAcc"])
    with pytest.raises(ValueError, match="Prediction"):
        m.update(torch.tensor([[3]]), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="Prediction"):
        m.update(torch.tensor([[-1]]), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="Target"):
        m.update(torch.tensor([[0]]), torch.tensor([[7]]))
    with pytest.raises(ValueError, match="integer"):
        m.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    # uint8 maps (as read from PNGs) are accepted.
    m.update(torch.tensor([[0, 1]], dtype=torch.uint8), torch.tensor([[0, IGN]], dtype=torch.uint8))
    assert m.confmat.sum() == 1 and m.confmat[0, 0] == 1


def _random_maps(n: int, seed: int, h: int = 32, w: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 19, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < 0.15] = IGN
    pred = torch.where(
        torch.rand(n, h, w, generator=g) < 0.6, target, torch.randint(0, 19, (n, h, w), generator=g)
    )
    pred[pred == IGN] = 0
    return pred, target


def test_accumulation_equals_one_big_update() -> None:
    pred, target = _random_maps(6, seed=1)
    a = SegmentationMetric()
    for i in range(0, 6, 2):
        a.update(pred[i : i + 2], target[i : i + 2])
    b = SegmentationMetric()
    b.update(pred, target)
    ra, rb = a.compute(), b.compute()
    assert torch.equal(ra["confusion_matrix"], rb["confusion_matrix"])
    assert ra["mIoU"] == rb["mIoU"]
    # Dataset-level, not the mean of per-batch mIoUs.
    per_batch = []
    for i in range(0, 6, 2):
        m = SegmentationMetric()
        m.update(pred[i : i + 2], target[i : i + 2])
        per_batch.append(m.compute()["mIoU"])
    assert abs(np.mean(per_batch) - ra["mIoU"]) > 1e-6
    a.reset()
    assert a.confmat.sum() == 0


def test_full_resolution_uint8_map_counts_every_pixel() -> None:
    """A 1024x2048 uint8 map (what evaluate feeds it) gives numpy's confusion matrix. How fast: measured by
    benchmarks/metric_update.py, not asserted here (a shared machine's load decides a wall-clock bound)."""
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 19, (1, 1024, 2048), generator=g, dtype=torch.uint8)
    target[0, :100] = IGN
    pred = torch.randint(0, 19, (1, 1024, 2048), generator=g, dtype=torch.uint8)
    m = SegmentationMetric()
    m.update(pred, target)
    t, p = target.numpy().ravel().astype(np.int64), pred.numpy().ravel().astype(np.int64)
    keep = t != IGN
    expected = np.bincount(t[keep] * 19 + p[keep], minlength=19 * 19).reshape(19, 19)
    assert np.array_equal(m.confmat.numpy(), expected)
    assert m.confmat.sum() == 1024 * 2048 - 100 * 2048


def test_table_and_json() -> None:
    m = SegmentationMetric(num_classes=5)
    m.update(*_hand_case())
    r = m.compute()
    names = ["a", "b", "c", "d", "e"]
    console = Console(record=True, width=100)
    console.print(format_results_table(r, names))
    text = console.export_text()
    assert "50.00" in text and "33.33" in text and "n/a" in text and "mIoU" in text and "20.83" in text
    js = results_to_jsonable(r, names)
    json.dumps(js, allow_nan=False)  # no NaN, no tensors
    assert js["per_class"]["e"] == {"IoU": None, "Acc": None, "Precision": None, "Recall": None, "Dice": None}
    # precision / recall / F1 (Dice) beside IoU: class 0 I=2 of label 3, pred 3; class 3 predicted only
    assert js["per_class"]["a"]["Precision"] == pytest.approx(200 / 3) == js["per_class"]["a"]["Dice"]
    assert js["per_class"]["b"]["Recall"] == pytest.approx(50.0) == js["per_class"]["b"]["Dice"]
    assert js["per_class"]["d"]["Precision"] == 0.0 and js["per_class"]["d"]["Recall"] is None
    assert "F1 (Dice)" in text and "mDice" in text and "fgIoU" not in js
    assert js["per_class"]["d"]["IoU"] == 0.0 and js["per_class"]["d"]["Acc"] is None
    assert js["mIoU"] == pytest.approx(r["mIoU"])
    assert js["confusion_matrix"][0][0] == 2


# ------------------------------------------------------------------------------------- DDP (gloo, CPU)


def _ddp_worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    # a file store in the test's own folder: no TCP port to pick, so no race with parallel tests
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        pred, target = _random_maps(4, seed=10 + rank)
        m = SegmentationMetric()
        m.update(pred, target)
        local = m.confmat.clone()
        synced = m.compute()["confusion_matrix"]
        torch.save({"local": local, "synced": synced}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_sync_sums_confusion_matrices(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert not torch.equal(r0["local"], r1["local"])
    expected = r0["local"] + r1["local"]
    assert torch.equal(r0["synced"], expected) and torch.equal(r1["synced"], expected)
    # and equal to a single process seeing both ranks' data
    m = SegmentationMetric()
    for seed in (10, 11):
        m.update(*_random_maps(4, seed=seed))
    assert torch.equal(m.confmat, expected)


# ------------------------------------------------------------------------------- cityscapesscripts parity


def test_matches_cityscapesscripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as ev

    # numpy 2.4: np.in1d is gone (docs/libraries.md)
    monkeypatch.setattr(ev.args, "evalInstLevelScore", False)
    monkeypatch.setattr(ev.args, "quiet", True)
    monkeypatch.setattr(ev.args, "JSONOutput", False)

    rng = np.random.default_rng(0)
    # GT label ids: the 19 train ids' label ids plus ignored ids (0 unlabeled, 4 static, 5 dynamic);
    # train id 16 ('train', label id 31) never occurs in GT or predictions -> NaN in both;
    # train id 14 ('truck') is only ever predicted -> IoU 0 in both.
    gt_choices = np.array(
        [int(i) for i in TRAIN_ID_TO_LABEL_ID if i not in (31, 27)] + [0, 4, 5], dtype=np.uint8
    )
    metric = SegmentationMetric()
    preds, gts = [], []
    for k in range(3):
        gt = rng.choice(gt_choices, size=(64, 128)).astype(np.uint8)
        gt_train = LABEL_ID_TO_TRAIN_ID[gt]
        pred_train = np.where(rng.random(gt.shape) < 0.7, gt_train, rng.integers(0, 19, gt.shape)).astype(
            np.uint8
        )
        pred_train[pred_train == IGN] = rng.integers(0, 19, int((pred_train == IGN).sum()))
        pred_train[pred_train == 16] = 14
        pred_train[:2, :4] = 14
        city_dir = tmp_path / "gtFine" / "val" / "city"
        city_dir.mkdir(parents=True, exist_ok=True)
        (tmp_path / "results").mkdir(exist_ok=True)
        gt_path = city_dir / f"city_000000_{k:06d}_gtFine_labelIds.png"
        pred_path = tmp_path / "results" / f"city_000000_{k:06d}_pred.png"
        Image.fromarray(gt).save(gt_path)
        Image.fromarray(TRAIN_ID_TO_LABEL_ID[pred_train]).save(pred_path)  # predictions as label ids
        gts.append(str(gt_path))
        preds.append(str(pred_path))
        metric.update(torch.from_numpy(pred_train[None]), torch.from_numpy(gt_train[None]))

    res = ev.evaluateImgLists(preds, gts, ev.args)
    ours = metric.compute()
    assert ours["mIoU"] == pytest.approx(res["averageScoreClasses"] * 100, abs=1e-4)
    for i, name in enumerate(CLASSES):
        theirs = res["classScores"][name]
        if math.isnan(theirs):
            assert math.isnan(ours["IoU"][i]), name
        else:
            assert ours["IoU"][i].item() == pytest.approx(theirs * 100, abs=1e-9), name
    assert math.isnan(ours["IoU"][16]) and ours["IoU"][14] == 0.0


def test_binary_results_quote_the_foreground_iou() -> None:
    m = SegmentationMetric(num_classes=2)
    m.update(torch.tensor([[0, 0, 1, 1, 1]]), torch.tensor([[0, 0, 0, 1, 1]]))
    r = m.compute()
    assert r["fgIoU"] == pytest.approx(100 * 2 / 3) and r["IoU"][1].item() == pytest.approx(r["fgIoU"])
    assert r["Dice"][1].item() == pytest.approx(100 * 4 / 5)
