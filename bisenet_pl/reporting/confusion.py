"""`confusion_matrix.csv`: the raw confusion counts of a test, beside its `results.json`.

Rows are the labels, columns the predictions, one per class, in the class order of the results; the first
row and column hold the class names. Ignored pixels are not counted, so row i sums to the number of
labelled pixels of class i in the split.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FILENAME = "confusion_matrix.csv"
CORNER = "label \\ prediction"


def confusion_csv_text(matrix: Any, class_names: Sequence[str]) -> str:
    counts = np.asarray(matrix.tolist() if hasattr(matrix, "tolist") else matrix, dtype=np.int64)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"a {counts.shape} confusion matrix for {len(class_names)} classes")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([CORNER, *class_names])
    for name, row in zip(class_names, counts.tolist(), strict=True):
        writer.writerow([name, *row])
    return out.getvalue()


def write_confusion_csv(folder: str | Path, matrix: Any, class_names: Sequence[str]) -> Path:
    """Write `<folder>/confusion_matrix.csv` (atomically: a reader never sees half a file)."""
    from bisenet_pl.checkpoints.io import atomic_write_text

    return atomic_write_text(confusion_csv_text(matrix, class_names), Path(folder) / FILENAME)


def read_confusion_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """(class names, (C, C) int64 counts); ValueError naming the file when it is not one we wrote."""
    path = Path(path)
    rows = list(csv.reader(io.StringIO(path.read_text())))
    if not rows or rows[0][:1] != [CORNER]:
        raise ValueError(f"{path}: not a confusion matrix written by bisenet_pl (header {rows[:1]})")
    names = rows[0][1:]
    body = rows[1:]
    if len(body) != len(names) or any(len(r) != len(names) + 1 for r in body):
        raise ValueError(f"{path}: {len(body)} rows for {len(names)} classes (truncated?)")
    try:
        counts = np.array([[int(v) for v in r[1:]] for r in body], dtype=np.int64)
    except ValueError:
        raise ValueError(f"{path}: a count that is not an integer") from None
    return names, counts
