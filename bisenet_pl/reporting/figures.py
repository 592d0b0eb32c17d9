"""The report's figures, drawn by matplotlib (Agg, no display) into PNG bytes.

Each function returns the PNG of one figure, so the page embeds exactly the bytes written to
`report/<name>.png`. Figures are built with `matplotlib.figure.Figure` (not pyplot), which keeps no global
state between reports.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from bisenet_pl.reporting.runs import Metrics

DPI = 110
#: Error-map colours (RGB): wrong pixels, ignored pixels; correct pixels show the image, darkened.
WRONG = (230, 25, 75)
IGNORED = (70, 130, 230)
#: Columns that hold the share of a step spent waiting for data, whichever name the logger gives it.
DATA_WAIT = re.compile(r"(data[_/ ]?(wait|time)|wait)", re.IGNORECASE)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def png_bytes(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def loss_columns(metrics: Metrics) -> list[str]:
    """Each head's loss and the total (`train/loss`), in the logger's order, total last."""
    heads = [c for c in metrics.columns if c.startswith("train/loss_") and metrics.has(c)]
    total = ["train/loss"] if metrics.has("train/loss") else []
    return heads + total


def data_wait_columns(metrics: Metrics) -> list[str]:
    return [c for c in metrics.columns if c.startswith("train/") and DATA_WAIT.search(c) and metrics.has(c)]


def curves(metrics: Metrics, columns: Sequence[str], title: str, ylabel: str, log_y: bool = False) -> bytes:
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    for column in columns:
        steps, values = metrics.series(column)
        style = {"linewidth": 2.2, "color": "black"} if column == "train/loss" else {"linewidth": 1.2}
        ax.plot(steps, values, marker="o" if len(steps) < 12 else None, markersize=3, label=column, **style)
    if log_y and all((metrics.series(c)[1] > 0).all() for c in columns):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(columns) > 1:
        ax.legend(fontsize=7, ncol=2)
    return png_bytes(fig)


def per_class_bars(names: Sequence[str], iou: Sequence[float | None]) -> bytes:
    """Horizontal bars of per-class IoU, sorted from best to worst (classes without a value last, 'n/a')."""
    order = sorted(range(len(names)), key=lambda i: -1.0 if iou[i] is None else float(iou[i] or 0.0))[::-1]
    order = [i for i in order if iou[i] is not None] + [i for i in order if iou[i] is None]
    fig = _figure(6.4, 0.8 + 0.24 * len(names))
    ax = fig.add_subplot()
    values = [0.0 if iou[i] is None else float(iou[i] or 0.0) for i in order]
    ax.barh(range(len(order)), values, color="#3b75af")
    ax.set_yticks(range(len(order)), [str(names[i]) for i in order], fontsize=8)
    ax.invert_yaxis()
    for y, i in enumerate(order):
        text = "n/a" if iou[i] is None else f"{float(iou[i] or 0.0):.2f}"
        ax.text(values[y] + 0.5, y, text, va="center", fontsize=7)
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU (%)")
    ax.set_title("per-class IoU, sorted")
    ax.grid(axis="x", alpha=0.3)
    return png_bytes(fig)


def normalised_confusion(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a class's labelled pixels predicted as each class);
    rows of classes without labelled pixels are NaN."""
    counts = np.asarray(counts, dtype=np.float64)
    sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, counts / np.where(sums > 0, sums, 1), np.nan)


def confusion_heatmap(names: Sequence[str], counts: np.ndarray) -> bytes:
    norm = normalised_confusion(counts)
    n = len(names)
    size = max(4.5, 0.42 * n + 2.2)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(norm, nan=0.0) * 100, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    ax.set_title("confusion matrix, each row normalised (%)")
    if n <= 25:
        for r in range(n):
            for c in range(n):
                value = norm[r, c]
                if not math.isnan(value) and value >= 0.005:
                    ax.text(c, r, f"{value * 100:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if value > 0.6 else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, shrink=0.8, label="% of the label's pixels")
    return png_bytes(fig)


def error_map(image: np.ndarray, label: np.ndarray, pred: np.ndarray, ignore_index: int) -> np.ndarray:
    """RGB uint8: correct pixels show the image darkened, wrong ones `WRONG`, ignored ones `IGNORED`."""
    out = (image.astype(np.float32) * 0.35).astype(np.uint8)
    ignored = label == ignore_index
    wrong = (label != pred) & ~ignored
    out[wrong] = WRONG
    out[ignored] = IGNORED
    return out


def sample_grid(panels: Sequence[Any], palette: Sequence[Sequence[int]], ignore_index: int) -> bytes:
    """One row per val image: image, ground truth, prediction, error map (`reporting.samples.Panel`s)."""
    from bisenet_pl.inference.visualize import colorize

    rows = len(panels)
    h, w = panels[0].label.shape
    width = 12.0
    height = rows * (width / 4) * h / w + 0.6 * rows
    fig = _figure(width, height)
    axes = fig.subplots(rows, 4, squeeze=False)
    titles = ("image", "ground truth", "prediction", "errors (red wrong, blue ignored)")
    for r, panel in enumerate(panels):
        pictures = (
            panel.image,
            colorize(panel.label, palette),
            colorize(panel.pred, palette),
            error_map(panel.image, panel.label, panel.pred, ignore_index),
        )
        for c, picture in enumerate(pictures):
            ax = axes[r][c]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{panel.name}" if c == 0 else titles[c], fontsize=8)
            if c == 3:
                ax.set_xlabel(f"{panel.accuracy:.1f} % of labelled pixels right", fontsize=7)
    return png_bytes(fig)


def sweep_bars(groups: Sequence[dict[str, Any]]) -> bytes:
    """Mean ± std (n - 1) of the final mIoU per configuration, each seed's value as a dot."""
    fig = _figure(max(5.0, 1.3 * len(groups) + 2), 3.8)
    ax = fig.add_subplot()
    for x, g in enumerate(groups):
        std = g["std"] if g["std"] is not None else 0.0
        ax.errorbar([x], [g["mean"]], yerr=[std], fmt="o", capsize=6, color="#3b75af", markersize=7)
        ax.scatter([x] * len(g["values"]), g["values"], color="black", s=12, zorder=3)
    ax.set_xticks(range(len(groups)), [_wrap(g["config"]) for g in groups], fontsize=7)
    ax.set_ylabel("final mIoU (%)")
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_title("final mIoU: mean ± std over seeds (dots: jobs)")
    ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig)


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line]) if line else "\n".join(lines)


def shared_curves(jobs: Sequence[tuple[str, Metrics]], column: str, title: str, ylabel: str) -> bytes:
    """One line per job on shared axes."""
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    for label, metrics in jobs:
        steps, values = metrics.series(column)
        if len(steps):
            ax.plot(steps, values, marker="o" if len(steps) < 12 else None, markersize=3, label=label,
                    linewidth=1.2)  # fmt: skip
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return png_bytes(fig)
