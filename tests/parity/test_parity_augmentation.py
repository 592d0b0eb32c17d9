"""Check 6, augmentation: mmseg's own Cityscapes train pipeline against ours, by two-sample tests.

mmseg builds its config's training dataset (`train_dataloader.dataset`, CityscapesDataset, data_root
pointed at our frames) and runs its pipeline (LoadImageFromFile, LoadAnnotations, RandomResize
(2048, 1024) x U[0.5, 2.0) keep-ratio, RandomCrop 1024x1024 with cat_max_ratio 0.75, RandomFlip 0.5,
PhotoMetricDistortion, PackSegInputs) and then its model's SegDataPreProcessor (BGR -> RGB, normalise,
pad to 1024x1024 with 0 / seg 255). We run `build_train_transform()` on the same full-size (2048x1024)
frames, read from the same PNG files by our dataset's loaders. Each side makes SAMPLES samples in a row
per frame from one generator seeded per frame (as a data-loader worker does). The two sides draw from
different generators, so the samples are compared as distributions: every sample is summarised by
`reference/augment_stats.py` (the same code on both sides) and each statistic's two samples go through
a two-sample Kolmogorov-Smirnov test; the flip rate through a two-proportion z-test.

Statistics (per sample): the resize ratio applied (resized width / 2048), the padded fraction, the 255
fraction of the label, per-channel mean and std of the normalised image, the largest class's share of
the labelled pixels (what cat_max_ratio bounds) and the 19 class fractions, each over all samples; the
largest class share again on the dominant-class frame alone (see `frames`: on the synthetic scenes the
retry rule almost never fires); the flip. M = 31 tests; each must give p >= ALPHA / M (Bonferroni,
family-wise ALPHA = 0.01: a correct pipeline fails the check with probability <= 1 % under a fresh
choice of seeds). The seeds are fixed, so the outcome is deterministic. Exact properties (output
1024x1024, padding 0 / 255 at the bottom/right) are checked on every sample of both sides.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import ours
import pytest
import torch
from conftest import load
from reference import augment_stats
from scipy import stats as st

SYNTHETIC = 3  # full-size synthetic frames (2048x1024, the real Cityscapes size) ...
FRAMES = SYNTHETIC + 1  # ... and one with a dominant class (see `frames`)
SAMPLES = 120  # augmented samples per frame and side
SEED = 6
SIZE = (1024, 1024)
FRAME_W = 2048
ALPHA = 0.01  # family-wise
CLASS_COLUMNS = [n for n in augment_stats.NAMES if n.startswith("class_")]
SCALAR_COLUMNS = [n for n in augment_stats.NAMES if not n.startswith("class_")]
DOMINANT = "zz_dominant"
# one KS test per column over all samples, one on the dominant frame's largest class share, the flip's z-test
TESTS = len(augment_stats.NAMES) + 2
PER_TEST = ALPHA / TESTS

LABELS = {
    "scale": "resize ratio applied (resized width / 2048)",
    "padded": "padded fraction",
    "ignored": "ignored (255) fraction",
    "mean_r": "normalised image mean R",
    "mean_g": "normalised image mean G",
    "mean_b": "normalised image mean B",
    "std_r": "normalised image std R",
    "std_g": "normalised image std G",
    "std_b": "normalised image std B",
    "max_class_share": "largest class share of labelled pixels",
}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Full-size synthetic frames in Cityscapes' layout, with the `*_gtFine_labelTrainIds.png` that
    mmseg's converter would write (both sides read those), plus one frame whose label is sky (10) in its
    top 70 %: on the synthetic scenes no class comes near cat_max_ratio's 75 %, on that one the crop's
    retry rule decides most crops."""
    root = tmp_path_factory.mktemp("augment_frames")
    ours.make_synthetic_cityscapes(
        root, n_train=SYNTHETIC, n_val=0, n_test=0, height=1024, width=FRAME_W, seed=0
    )
    for label_ids in sorted((root / "gtFine" / "train").rglob("*_gtFine_labelIds.png")):
        ids = cv2.imread(str(label_ids), cv2.IMREAD_UNCHANGED)
        train_ids = ours.LABEL_ID_TO_TRAIN_ID[ids]
        cv2.imwrite(str(label_ids).replace("_labelIds.png", "_labelTrainIds.png"), train_ids)
    first = ours.find_samples(root, "train")[0]
    stem = "zz_dominant/zz_dominant_000000_000019"
    for path in (root / "leftImg8bit" / "train" / stem, root / "gtFine" / "train" / stem):
        path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(first.image, root / "leftImg8bit" / "train" / f"{stem}_leftImg8bit.png")
    label = cv2.imread(str(first.label), cv2.IMREAD_UNCHANGED)
    label[: int(0.7 * label.shape[0])] = ours.CLASSES.index("sky")
    cv2.imwrite(str(root / "gtFine" / "train" / f"{stem}_gtFine_labelTrainIds.png"), label)
    samples = ours.find_samples(root, "train")
    assert len(samples) == FRAMES and all(s.label_kind == "trainIds" for s in samples)
    return root, samples


def _applied(out: dict, name: str) -> dict | None:
    found = [params for step, params in out["applied_transforms"] if step == name]
    return found[0] if found else None


def _our_samples(frames) -> dict:
    """`build_train_transform()` as the dataset uses it: one seeded pipeline per frame, SAMPLES calls."""
    pipeline = ours.build_train_transform()
    pipeline.save_applied_params = True  # albumentations records each applied step's parameters
    samples, flips = [], []
    for index, frame in enumerate(frames):
        ours.seed_transform(pipeline, [SEED, 0, index])
        image, label = ours.load_image(frame.image), ours.load_label(frame)
        for _ in range(SAMPLES):
            out = pipeline(image=image, mask=label)
            resize, pad = _applied(out, "RandomResize"), _applied(out, "PadIfNeeded")
            assert resize is not None and pad is not None, [s for s, _ in out["applied_transforms"]]
            h, w = out["mask"].shape
            crop = (h - pad["pad_top"] - pad["pad_bottom"], w - pad["pad_left"] - pad["pad_right"])
            samples.append(
                augment_stats.sample_stats(
                    torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
                    torch.from_numpy(np.ascontiguousarray(out["mask"])),
                    crop,
                    resize["new_size"][0] / image.shape[1],
                )
            )
            flips.append(_applied(out, "HorizontalFlip") is not None)
    return augment_stats.collate(samples, flips)


def _proportion_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sided p of the pooled two-proportion z-test."""
    n1, n2 = a.numel(), b.numel()
    p1, p2 = float(a.double().mean()), float(b.double().mean())
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if p1 == p2 else 0.0
    return float(2 * st.norm.sf(abs(p1 - p2) / se))


def test_train_pipeline_distributions(frames, reference, record):
    root, samples = frames
    extra = json.dumps({"root": str(root), "samples": SAMPLES}, sort_keys=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:  # mmseg's side runs in its own process meanwhile
        future = pool.submit(reference, "augment", "--seed", str(SEED), "--extra", extra)
        mine = _our_samples(samples)
        out = future.result()
    elapsed = time.perf_counter() - start
    ref = load(out / "augment.pt")
    config = json.loads((out / "augment.json").read_text())
    assert ref["names"] == mine["names"] == list(augment_stats.NAMES)
    ours_frames = [str(f.image.relative_to(root)) for f in samples]
    assert config["frames"] == ours_frames, (config["frames"], ours_frames)  # same files, same order
    n = FRAMES * SAMPLES
    assert ref["stats"].shape[0] == mine["stats"].shape[0] == n
    print(f"[parity] augmentation: {n} samples per side in {elapsed:.1f} s")

    kinds = [s["type"] for s in config["pipeline"]]
    expected = [
        "LoadImageFromFile",
        "LoadAnnotations",
        "RandomResize",
        "RandomCrop",
        "RandomFlip",
        "PhotoMetricDistortion",
        "PackSegInputs",
    ]
    tol = f"p >= {PER_TEST:.2g} (KS; Bonferroni {ALPHA:g}/{TESTS})"
    ok = [
        record(
            "augmentation",
            "mmseg train pipeline is the config's 7 steps",
            kinds == expected,
            "True",
            kinds == expected,
        )
    ]

    for side, data in (("ours", mine), ("mmseg", ref)):
        size_ok = bool((data["sizes"] == torch.tensor(SIZE)).all())
        pad_ok = bool(data["pad_ok"].all())
        ok.append(
            record(
                "augmentation",
                f"{side}: every sample 1024x1024, padding 0 (image) / 255 (label) at the bottom/right",
                size_ok and pad_ok,
                "True",
                size_ok and pad_ok,
            )
        )

    columns = list(augment_stats.NAMES)
    pvalues = {}
    for j, name in enumerate(columns):
        a, b = mine["stats"][:, j].numpy(), ref["stats"][:, j].numpy()
        pvalues[name] = (float(st.ks_2samp(a, b).pvalue), float(a.mean()), float(b.mean()))
        print(  # ours, mmseg
            f"[parity] augmentation {name}: KS p {pvalues[name][0]:.4g}, means {a.mean():.5g}, {b.mean():.5g}"
        )
    for name in SCALAR_COLUMNS:
        p, ma, mb = pvalues[name]
        quantity = f"{LABELS[name]}: KS p (means ours {ma:.4g}, mmseg {mb:.4g})"
        ok.append(record("augmentation", quantity, p, tol, p >= PER_TEST))

    # the crop's retry rule where it matters: the largest class share on the dominant-class frame alone
    frame = next(i for i, f in enumerate(samples) if DOMINANT in f.image.name)
    rows = slice(frame * SAMPLES, (frame + 1) * SAMPLES)
    j = columns.index("max_class_share")
    a, b = mine["stats"][rows, j].numpy(), ref["stats"][rows, j].numpy()
    p = float(st.ks_2samp(a, b).pvalue)
    over = [float((x >= 0.75).mean()) for x in (a, b)]
    quantity = (
        f"dominant-class frame: largest class share KS p (>= 0.75: ours {over[0]:.2f}, mmseg {over[1]:.2f})"
    )
    ok.append(record("augmentation", quantity, p, tol, p >= PER_TEST))

    worst = min(CLASS_COLUMNS, key=lambda c: pvalues[c][0])
    p, ma, mb = pvalues[worst]
    cls = ours.CLASSES[int(worst.split("_")[1])]
    quantity = (
        f"class fractions, smallest KS p of {len(CLASS_COLUMNS)} ({cls}: means ours {ma:.4g}, mmseg {mb:.4g})"
    )
    ok.append(record("augmentation", quantity, p, tol, p >= PER_TEST))
    failing = sum(pvalues[c][0] < PER_TEST for c in CLASS_COLUMNS)
    quantity = f"class fractions: classes with KS p < {PER_TEST:.2g}"
    ok.append(record("augmentation", quantity, failing, "0", failing == 0))

    p = _proportion_z(mine["flip"], ref["flip"])
    rates = [float(mine["flip"].double().mean()), float(ref["flip"].double().mean())]
    quantity = f"flip rate: two-proportion z-test p (ours {rates[0]:.3f}, mmseg {rates[1]:.3f} of {n})"
    ok.append(
        record(
            "augmentation",
            quantity,
            p,
            f"p >= {PER_TEST:.2g} (z-test; Bonferroni {ALPHA:g}/{TESTS})",
            p >= PER_TEST,
        )
    )
    assert all(ok)
