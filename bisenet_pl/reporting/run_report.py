"""The run report: `report.html` (one self-contained page) and `report/*.png` in the run folder.

Nothing else in the folder is written or changed. Sections (docs/report.md): training curves, validation,
the final per-class table and its bar chart, the confusion matrix, a fixed grid of val images, and what
produced the numbers (command line, config diff against the experiment, checkpoint, machine).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bisenet_pl.reporting import figures
from bisenet_pl.reporting.page import Page, esc, number
from bisenet_pl.reporting.runs import METRICS_CSV, RESULTS, RunFolder

log = logging.getLogger(__name__)

REPORT = "report.html"
FIGURES = "report"
#: The one rule behind every number of a checkpoint (docs/report.md#one-number-per-checkpoint).
PRECISION_RULE = (
    "One number per checkpoint: validation, the final test, evaluate and this report's grid all run fp32 "
    "inference (no autocast, NCHW) from the checkpoint's fp32 weights, whatever precision trained them."
)


def write_run_report(
    run: RunFolder,
    panels: Sequence[Any] | None = None,
    panels_missing: str | None = None,
    config_diff: Sequence[tuple[str, Any, Any]] | None = None,
    config_base: str | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    ignore_index: int = 255,
) -> Path:
    """Write `report.html` and `report/*.png` into `run.path`; returns the page's path."""
    page = Page(f"bisenet_pl {run.kind} report: {run.path.name}", run.path / FIGURES)
    page.note(f"folder {run.path} · written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    if run.missing:
        page.add('<div id="missing">')
        for item in run.missing:
            page.missing(f"missing: {item}")
        page.add("</div>")
    for note in run.notes:
        page.note(note)
    _curves(page, run)
    _results(page, run)
    _confusion(page, run)
    _samples(page, run, panels, panels_missing, palette, ignore_index)
    _provenance(page, run, config_diff, config_base)
    path = run.path / REPORT
    tmp = path.with_name(f".{REPORT}.tmp")
    tmp.write_text(page.html())
    tmp.replace(path)
    log.info("report written to %s (%d figures in %s)", path, len(page.figures), page.figures_dir)
    return path


def _curves(page: Page, run: RunFolder) -> None:
    page.section("curves", "Training curves")
    m = run.metrics
    if m is None:
        page.missing(f"no training curves: this folder has no {METRICS_CSV} (an evaluate folder)")
        return
    page.note(f"from {METRICS_CSV}: {len(m.rows)} rows, last step {m.last_step}")
    losses = figures.loss_columns(m)
    if losses:
        page.figure("losses", figures.curves(m, losses, "loss per head and total", "loss", True),
                    "each head's loss and the total (black)")  # fmt: skip
    else:
        page.missing("no train/loss rows yet")
    if m.has("train/lr"):
        page.figure(
            "lr", figures.curves(m, ["train/lr"], "learning rate", "LR"), "the LR each iteration used"
        )
    else:
        page.missing("no train/lr rows yet")
    if m.has("train/images_per_s"):
        page.figure("speed", figures.curves(m, ["train/images_per_s"], "training speed", "images/s (global)"),
                    "images/s of the global batch")  # fmt: skip
    else:
        page.missing("no train/images_per_s rows yet")
    wait = figures.data_wait_columns(m)
    if wait:
        page.figure("data_wait", figures.curves(m, wait, "waiting for data", "share of each step"),
                    "the share of each step spent waiting for data")  # fmt: skip
    else:
        page.missing(
            "data wait: this run logged no data-wait metric (a train/*data_wait* column in csv/metrics.csv), "
            "so the share of each step spent waiting for data cannot be drawn"
        )
    page.section("validation", "Validation")
    val = [c for c in ("val/mIoU", "val/aAcc") if m.has(c)]
    if val:
        page.figure("val", figures.curves(m, val, "validation", "%"), "val mIoU and aAcc at each validation")
        steps, miou = m.series("val/mIoU")
        rows = [[f"{int(s)}", number(v), number(a)] for s, v, a in
                zip(steps, miou, m.series("val/aAcc")[1] if m.has("val/aAcc") else [None] * len(steps),
                    strict=True)]  # fmt: skip
        page.table(["step", "val mIoU", "val aAcc"], rows, "validations")
    else:
        page.missing("no validation yet: no val/mIoU in csv/metrics.csv")


def _results(page: Page, run: RunFolder) -> None:
    page.section("results", "Final per-class results")
    if run.results is None:
        page.missing(f"no {RESULTS}: the final test has not run (the run is still going, stopped or killed)")
        return
    res = run.results["results"]
    per_class = res["per_class"]
    what = (
        f"evaluate, mode {run.results.get('mode')}, split {run.results.get('split')}"
        if run.kind == "evaluate"
        else f"the final test at step {run.results.get('global_step')}"
    )
    page.note(f"{RESULTS}: {what}. {PRECISION_RULE}")
    rows = [
        [name, number(v.get("IoU")), number(v.get("Acc")), number(v.get("Precision")), number(v.get("Dice"))]
        for name, v in per_class.items()
    ]
    page.table(["class", "IoU", "Acc", "Precision", "F1 (Dice)"], rows, "per-class")
    summary = [
        [key, number(res.get(key))] for key in ("mIoU", "aAcc", "mAcc", "mDice", "fgIoU") if key in res
    ]
    page.table(["summary", "%"], summary, "summary")
    names = list(per_class)
    page.figure("per_class_iou", figures.per_class_bars(names, [v.get("IoU") for v in per_class.values()]),
                "per-class IoU, sorted")  # fmt: skip


def _confusion(page: Page, run: RunFolder) -> None:
    page.section("confusion", "Confusion matrix")
    if run.confusion is None:
        page.missing("no confusion matrix (confusion_matrix.csv is written by the final test and evaluate)")
        return
    names, counts = run.confusion
    page.note(
        "rows: label, columns: prediction; each row divided by the class's labelled pixels "
        f"(raw counts in confusion_matrix.csv; {int(counts.sum())} labelled pixels)"
    )
    page.figure(
        "confusion_matrix", figures.confusion_heatmap(names, counts), "normalised confusion matrix", True
    )
    rows = [[name, f"{int(counts[i].sum())}"] for i, name in enumerate(names)]
    page.add("<details><summary>labelled pixels per class (row sums)</summary>")
    page.table(["class", "labelled pixels"], rows, "row-sums")
    page.add("</details>")


def _samples(
    page: Page,
    run: RunFolder,
    panels: Sequence[Any] | None,
    missing: str | None,
    palette: Sequence[Sequence[int]] | None,
    ignore_index: int,
) -> None:
    page.section("samples", "Val images: image, ground truth, prediction, errors")
    if not panels:
        page.missing(f"no val image grid: {missing or 'no checkpoint or no labelled val images'}")
        return
    from bisenet_pl.data.cityscapes import PALETTE

    page.note(
        f"{len(panels)} fixed val images (evenly spaced over the split's sorted list: the same ones in every "
        f"report), predicted by {run.checkpoint} (whole image, fp32). Error map: red = wrong, blue = ignored "
        "label, darkened image = right."
    )
    page.figure("val_samples", figures.sample_grid(panels, palette or PALETTE, ignore_index),
                "val images: image, ground truth, prediction, error map", True)  # fmt: skip


def _provenance(
    page: Page, run: RunFolder, diff: Sequence[tuple[str, Any, Any]] | None, base: str | None
) -> None:
    page.section("provenance", "What produced these numbers")
    page.add(f'<p>command line:</p><pre id="command">{esc(run.command)}</pre>')
    ckpt = run.checkpoint
    exists = "" if ckpt is None or ckpt.is_file() else " (not on disk any more)"
    page.add(f'<p>checkpoint reported: <code id="checkpoint">{esc(ckpt or "none")}</code>{esc(exists)}</p>')
    if diff is None:
        page.missing(f"config diff: {base or 'no saved config to compare'}")
    elif not diff:
        page.note(f"config: identical to {base}")
    else:
        page.note(f"config keys that differ from {base}:")
        page.table(
            ["key", "experiment", "this run"], [[k, _short(a), _short(b)] for k, a, b in diff], "config"
        )
    machine = run.machine
    if machine:
        rows = [[str(k), _short(v)] for k, v in machine.items()]
        page.table(["machine", ""], rows, "machine")
    else:
        page.missing(f"machine: not recorded in {RESULTS} (runs before this report existed, or no results)")


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
