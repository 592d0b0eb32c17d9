"""Check 3, the losses: mmseg's decode/aux heads' `loss_by_feat` (CE, and OHEM on all five heads).

mmseg draws the labels (blocks of classes, 255 holes) and five heads' logits at their own strides
(1/8, 1/4, 1/8, 1/16, 1/32 of the label), sharp enough that the OHEM threshold and the CE's all-pixel
divisor matter. Its heads upsample the logits to the label, sample with OHEMPixelSampler where the
config sets one (v0.x: decode and every aux head; thresh 0.7, min_kept 10000) and apply their CE; the
total is `parse_losses`. Our MultiHeadLoss must give the same per-head losses and total (1e-5
relative) and `ohem_weights` the same kept-pixel counts (exact), also in the case where min_kept
exceeds the valid pixels.
"""

from __future__ import annotations

import ours
import torch
import torch.nn.functional as F
from conftest import load

REL = 1e-5
HEADS = ("decode", "aux0", "aux1", "aux2", "aux3")


def _ours(case: str):
    if case == "ce":
        return ours.MultiHeadLoss(), None
    min_kept = 10000 if case == "ohem" else 10**6
    return ours.MultiHeadLoss(ohem_thresh=0.7, ohem_min_kept=min_kept), min_kept


def test_losses_and_ohem_counts(reference, record):
    ref = load(reference("losses", "--batch", "2", "--size", "256") / "losses.pt")
    logits, label = ref["logits"], ref["label"]
    failures = []
    for case, expected in ref["cases"].items():
        loss_fn, min_kept = _ours(case)
        with torch.no_grad():
            got = loss_fn(logits, label)
        for name in (*HEADS, "total"):
            want = expected["total"] if name == "total" else expected["losses"][name]
            rel = abs(float(got[name]) - want) / abs(want)
            if not record(
                "losses", f"{case} {name} relative diff (mmseg {want:.5f})", rel, f"<= {REL:g}", rel <= REL
            ):
                failures.append((case, name))
        if min_kept is None:
            continue
        for name, lg in zip(HEADS, logits, strict=True):
            up = F.interpolate(lg, size=label.shape[-2:], mode="bilinear", align_corners=False)
            kept = int(ours.ohem_weights(up, label, 0.7, min_kept).sum())
            want = expected["kept"][name]
            if not record(
                "losses",
                f"{case} {name} kept pixels (mmseg {want} of {expected['valid']})",
                kept,
                "exact",
                kept == want,
            ):
                failures.append((case, name, "kept"))
    assert not failures, failures
