"""What a run folder holds, read without changing it: metrics, results, confusion matrix, command, config.

A *run* is a training folder (`run_config.yaml`, `csv/metrics.csv`, `checkpoints/`) or an evaluate folder
(`results.json` written by `bisenet_pl.evaluate`); a *sweep* is a folder of numbered job folders. A run
that is still going, or was killed, is read as far as it got: `csv/metrics.csv` up to its last complete
row, and the report says what is missing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bisenet_pl.errors import BisenetError
from bisenet_pl.reporting.confusion import FILENAME as CONFUSION_CSV
from bisenet_pl.reporting.confusion import read_confusion_csv

log = logging.getLogger(__name__)

METRICS_CSV = Path("csv") / "metrics.csv"
RESULTS = "results.json"
RUN_CONFIG = "run_config.yaml"


class ReportError(BisenetError):
    """A folder the report cannot describe: the message names it and what is missing."""


@dataclass
class Metrics:
    """`csv/metrics.csv` as columns of floats (NaN where a row has no value), complete rows only."""

    columns: list[str]
    rows: list[dict[str, float]]
    #: What was dropped (a row cut by a kill mid-write), or None.
    note: str | None = None

    def series(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the rows where `column` has a value."""
        pairs = [
            (r.get("step", math.nan), r[column])
            for r in self.rows
            if column in r and not math.isnan(r[column])
        ]
        if not pairs:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*pairs, strict=True)
        return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)

    def has(self, column: str) -> bool:
        return len(self.series(column)[1]) > 0

    @property
    def last_step(self) -> int | None:
        steps = [r["step"] for r in self.rows if "step" in r and not math.isnan(r["step"])]
        return int(max(steps)) if steps else None


def read_metrics(path: Path) -> Metrics:
    """Parse Lightning's metrics CSV. A last line cut by a kill (no newline, or fewer fields than the
    header, or a value that is not a number) is dropped and noted; a header cut short is an error."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    lines = raw.split("\n")
    note = None
    if not raw.endswith("\n"):
        # The last line was being written when the process died.
        if len(lines) == 1:
            raise ReportError(f"{path}: truncated before the end of its header line (a run killed mid-write)")
        note = f"{path.name}: its last line was cut (a run killed mid-write); that row is left out"
        lines = lines[:-1]
    reader = csv.reader(io.StringIO("\n".join(lines)))
    try:
        header = next(reader)
    except StopIteration:
        raise ReportError(f"{path}: empty (no header)") from None
    if "step" not in header:
        raise ReportError(f"{path}: no 'step' column in its header; not a metrics file of a run")
    rows: list[dict[str, float]] = []
    bad = 0
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(header):
            bad += 1
            continue
        row: dict[str, float] = {}
        try:
            for key, value in zip(header, fields, strict=True):
                row[key] = float(value) if value != "" else math.nan
        except ValueError:
            bad += 1
            continue
        rows.append(row)
    if bad:
        extra = f"{bad} malformed row{'s' if bad > 1 else ''} left out"
        note = f"{note}; {extra}" if note else f"{path.name}: {extra}"
    return Metrics(list(header), rows, note)


@dataclass
class RunFolder:
    """Everything the run report shows, as read from the folder (None: absent)."""

    path: Path
    kind: str  # "train" or "evaluate"
    metrics: Metrics | None = None
    results: dict[str, Any] | None = None
    confusion: tuple[list[str], np.ndarray] | None = None
    config: dict[str, Any] | None = None
    overrides: list[str] = field(default_factory=list)
    checkpoint: Path | None = None
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        module = "bisenet_pl.train" if self.kind == "train" else "bisenet_pl.evaluate"
        return " ".join(["python", "-m", module, *(_quote(o) for o in self.overrides)])

    @property
    def class_names(self) -> list[str]:
        if self.results:
            return list(self.results["results"]["per_class"])
        if self.confusion:
            return list(self.confusion[0])
        return []

    @property
    def machine(self) -> dict[str, Any] | None:
        return (self.results or {}).get("machine")

    @property
    def experiment(self) -> str | None:
        if self.config and self.config.get("experiment_name"):
            return str(self.config["experiment_name"])
        for o in self.overrides:
            if o.startswith("experiment="):
                return o.split("=", 1)[1]
        return None


def _quote(text: str) -> str:
    return f"'{text}'" if any(c in text for c in " []{}(),*'\"$") else text


def is_sweep(path: Path) -> bool:
    return (path / "multirun.yaml").is_file() or any(
        p.is_dir() and p.name.isdigit() and is_run(p) for p in path.iterdir()
    )


def is_run(path: Path) -> bool:
    return any(
        (path / name).exists() for name in (RUN_CONFIG, str(METRICS_CSV), RESULTS, "checkpoints", ".hydra")
    )


def folder_kind(path: Path) -> str:
    """ "run" or "sweep"; ReportError when it is neither (or does not exist)."""
    if not path.is_dir():
        raise ReportError(f"{path}: no such folder")
    if is_run(path) and not (path / "multirun.yaml").is_file():
        return "run"
    if is_sweep(path):
        return "sweep"
    raise ReportError(
        f"{path}: not a run or sweep folder (no run_config.yaml, csv/metrics.csv or results.json, "
        "and no job folders 0/, 1/, ...)"
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not readable JSON ({err}); was it cut by a kill?") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ReportError(f"{path}: holds no 'results' of a test or evaluate")
    return data


def _read_yaml(path: Path) -> Any:
    import yaml

    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        log.warning("%s: not readable YAML (%s)", path, err)
        return None


def load_run(path: str | Path) -> RunFolder:
    """Read a run (or evaluate) folder; ReportError when there is nothing to report at all."""
    path = Path(path)
    results = _read_json(path / RESULTS)
    kind = "evaluate" if results is not None and "mode" in results and "backend" in results else "train"
    run = RunFolder(path=path, kind=kind, results=results)
    metrics_file = path / METRICS_CSV
    if metrics_file.is_file():
        run.metrics = read_metrics(metrics_file)
        if run.metrics.note:
            run.notes.append(run.metrics.note)
        if not run.metrics.rows:
            run.metrics = None
    if run.metrics is None and results is None:
        what = f"{METRICS_CSV} has no complete row" if metrics_file.is_file() else f"no {METRICS_CSV}"
        raise ReportError(f"{path}: a run without metrics: {what} and no {RESULTS} (nothing to report yet)")
    if run.metrics is None:
        if kind == "train":
            run.missing.append(f"training curves: no {METRICS_CSV}")
    elif not any(c.startswith("val/mIoU") for c in run.metrics.columns) or not run.metrics.has("val/mIoU"):
        run.missing.append("validation: none yet (no val/mIoU in csv/metrics.csv)")
    if results is None:
        run.missing.append(
            f"final results: no {RESULTS} yet (the run is still going, was stopped before its final test, "
            "or was killed)"
        )
    confusion_file = path / CONFUSION_CSV
    if confusion_file.is_file():
        try:
            run.confusion = read_confusion_csv(confusion_file)
        except (OSError, ValueError) as err:
            run.notes.append(str(err))
    if run.confusion is None and results is not None and "confusion_matrix" in results["results"]:
        names = list(results["results"]["per_class"])
        run.confusion = (names, np.asarray(results["results"]["confusion_matrix"], dtype=np.int64))
        run.notes.append(f"no {CONFUSION_CSV}: the confusion matrix is read from {RESULTS}")
    if run.confusion is None and results is not None:
        run.missing.append(f"confusion matrix: no {CONFUSION_CSV}")
    if kind == "train":
        run.config = _read_yaml(path / RUN_CONFIG)
    elif results is not None:
        run.config = results.get("config")
    overrides = _read_yaml(path / ".hydra" / "overrides.yaml")
    if isinstance(overrides, list):
        run.overrides = [str(o) for o in overrides]
    elif results is not None and isinstance(results.get("overrides"), list):
        run.overrides = [str(o) for o in results["overrides"]]
    run.checkpoint = _reported_checkpoint(run)
    return run


def _reported_checkpoint(run: RunFolder) -> Path | None:
    """The checkpoint whose numbers the report shows: the one results.json names, else the run's latest."""
    named = (run.results or {}).get("checkpoint")
    if named:
        return Path(named)
    if run.kind != "train":
        return None
    from bisenet_pl.checkpoints.run_files import latest_checkpoint

    latest = latest_checkpoint(run.path)
    return latest.path if latest is not None else None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": value} of a nested mapping (lists kept whole)."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        if not node and prefix:
            out[prefix[:-1]] = {}
        return out
    out[prefix[:-1]] = node
    return out


def config_diff(
    base: dict[str, Any], run: dict[str, Any], ignore: tuple[str, ...] = ("hydra",)
) -> list[tuple[str, Any, Any]]:
    """(key, experiment's value, run's value) for every key that differs, sorted; keys under `ignore`
    (and the start keys a resume sets) are left out."""
    a, b = flatten(base), flatten(run)
    skip = (*ignore, "resume", "ckpt_path")
    rows = []
    for key in sorted(set(a) | set(b)):
        if key.split(".", 1)[0] in skip:
            continue
        before, after = a.get(key, "<absent>"), b.get(key, "<absent>")
        if before != after:
            rows.append((key, before, after))
    return rows
