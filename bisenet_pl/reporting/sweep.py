"""A sweep folder read once (`load_sweep`), and what is made of it: the summary table (`summary.csv`,
`summary.md`, `summary_rows`) and the report (every job's varying overrides and final mIoU, mean ± std over
seeds per configuration, every job's loss and mIoU curves on shared axes). A job without results is
listed with its error (the last ERROR line of its log), never dropped."""

from __future__ import annotations

import csv
import logging
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bisenet_pl.reporting import figures
from bisenet_pl.reporting.page import Page, esc, number
from bisenet_pl.reporting.runs import METRICS_CSV, Metrics, ReportError, _read_json, _read_yaml, read_metrics

log = logging.getLogger(__name__)

REPORT = "report.html"
_ERROR_LINE = re.compile(r"\[(ERROR|CRITICAL)\]\s*-?\s*(.*)")


@dataclass
class Job:
    number: int
    path: Path
    overrides: list[str]
    varying: str = ""
    config: str = ""  # the varying overrides without seed=
    results: dict[str, Any] | None = None
    metrics: Metrics | None = None
    error: str | None = None

    @property
    def miou(self) -> float | None:
        value = (self.results or {}).get("results", {}).get("mIoU")
        return float(value) if isinstance(value, int | float) else None

    @property
    def status(self) -> str:
        return "done" if self.results is not None else "failed"

    @property
    def step(self) -> int | None:
        """The step of its results, else the last step its metrics logged."""
        step = (self.results or {}).get("global_step", self.metrics.last_step if self.metrics else None)
        return None if step is None else int(step)


@dataclass
class Sweep:
    path: Path
    jobs: list[Job] = field(default_factory=list)

    def groups(self) -> list[dict[str, Any]]:
        """Per configuration (the varying overrides without `seed=`): the finished jobs' mIoU, their mean
        and standard deviation (n - 1; None for one job)."""
        out: dict[str, list[float]] = {}
        for job in self.jobs:
            if job.miou is not None:
                out.setdefault(job.config, []).append(job.miou)
        return [
            {
                "config": key,
                "values": values,
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else None,
            }  # fmt: skip
            for key, values in out.items()
        ]


def job_error(job_dir: Path) -> str:
    """Why a job has no results: the last ERROR line of its logs, or what is known."""
    for log_file in sorted(job_dir.glob("*.log")) + sorted(job_dir.glob("**/*.err")):
        try:
            lines = log_file.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            found = _ERROR_LINE.search(line)
            if found:
                return found.group(2).strip()
            if log_file.suffix == ".err" and line.strip().startswith(("error:", "Error", "RuntimeError")):
                return line.strip()
    if (job_dir / METRICS_CSV).is_file():
        return "no results.json and no error logged: still running, or killed"
    return "no results.json, no metrics and no error logged: failed before training, or not started"


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    dirs = sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not dirs:
        raise ReportError(f"{path}: a sweep folder without job folders (0/, 1/, ...)")
    sweep = Sweep(path)
    for d in dirs:
        overrides = _read_yaml(d / ".hydra" / "overrides.yaml")
        job = Job(int(d.name), d, [str(o) for o in overrides] if isinstance(overrides, list) else [])
        try:
            job.results = _read_json(d / "results.json")
        except ReportError as err:
            job.error = str(err)
        if (d / METRICS_CSV).is_file():
            try:
                job.metrics = read_metrics(d / METRICS_CSV)
            except ReportError as err:
                log.warning("%s", err)
        if job.results is None and job.error is None:
            job.error = job_error(d)
        sweep.jobs.append(job)
    shared = set.intersection(*(set(j.overrides) for j in sweep.jobs)) if len(sweep.jobs) > 1 else set()
    for job in sweep.jobs:
        varying = [o for o in job.overrides if o not in shared]
        job.varying = " ".join(varying)
        job.config = " ".join(o for o in varying if not o.startswith("seed=")) or "(defaults)"
    return sweep


def write_sweep_report(sweep: Sweep) -> Path:
    page = Page(f"bisenet_pl sweep report: {sweep.path.name}", sweep.path / "report")
    page.note(
        f"folder {sweep.path} · {len(sweep.jobs)} jobs · written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    )
    failed = [j for j in sweep.jobs if j.results is None]
    if failed:
        page.missing(
            f"{len(failed)} of {len(sweep.jobs)} jobs have no results (listed below with their error)"
        )
    page.section("jobs", "Jobs")
    rows = []
    for job in sweep.jobs:
        res = (job.results or {}).get("results", {})
        link = job.path / "report.html"
        report = (
            f'<td><a href="{esc(job.path.name)}/report.html">report</a></td>'
            if link.is_file()
            else "<td></td>"
        )
        status = (
            "<td>done</td>"
            if job.results is not None
            else f'<td class="failed">failed: {esc(job.error)}</td>'
        )
        rows.append([str(job.number), job.varying or "(none)", number(job.miou), number(res.get("aAcc")),
                     str(job.step if job.step is not None else "n/a"), status, report])  # fmt: skip
    page.table(["job", "overrides", "mIoU", "aAcc", "step", "status", ""], rows, "jobs")
    page.section("seeds", "Mean ± std over seeds")
    groups = sweep.groups()
    if groups:
        page.note(
            "per configuration (the overrides without seed=): mean and sample standard deviation (n - 1)"
        )
        page.table(
            ["configuration", "jobs", "mIoU mean", "mIoU std", "min", "max"],
            [
                [
                    g["config"],
                    str(len(g["values"])),
                    number(g["mean"]),
                    number(g["std"]),
                    number(min(g["values"])),
                    number(max(g["values"])),
                ]
                for g in groups
            ],  # fmt: skip
            "seeds",
        )
        page.figure("sweep_miou", figures.sweep_bars(groups), "final mIoU per configuration, mean ± std")
    else:
        page.missing("no finished job: no mIoU to average")
    page.section("curves", "Every job's curves")
    curves = [(f"{j.number}: {j.varying}", j.metrics) for j in sweep.jobs if j.metrics is not None]
    if curves:
        page.figure("sweep_loss", figures.shared_curves(curves, "train/loss", "total training loss", "loss"),
                    "every job's total loss")  # fmt: skip
        if any(m.has("val/mIoU") for _, m in curves):
            page.figure("sweep_val_miou", figures.shared_curves(curves, "val/mIoU", "val mIoU", "mIoU (%)"),
                        "every job's val mIoU")  # fmt: skip
        else:
            page.missing("no job has validated yet")
    else:
        page.missing("no job has a csv/metrics.csv")
    path = sweep.path / REPORT
    tmp = path.with_name(f".{REPORT}.tmp")
    tmp.write_text(page.html())
    tmp.replace(path)
    return path


#: The summary's columns; the CSV also keeps every job's full command-line overrides.
COLUMNS = ("job", "overrides", "mIoU", "aAcc", "global_step", "status")
CSV_COLUMNS = (*COLUMNS, "all_overrides")


def summary_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per job: its number, varying overrides, final mIoU and aAcc, step and status."""
    return [
        {
            "job": job.number,
            "overrides": job.varying,
            "mIoU": job.miou,
            "aAcc": (job.results or {}).get("results", {}).get("aAcc"),
            "global_step": job.step,
            "status": job.status,
            "all_overrides": " ".join(job.overrides),
        }
        for job in sweep.jobs
    ]


def seed_groups(sweep: Sweep) -> list[dict[str, Any]]:
    """The configurations run with two seeds or more: their mean ± std (BiSeNetV2 varies by about 2 mIoU
    from seed to seed, so comparing two configs needs the spread, not one number each)."""
    return [g for g in sweep.groups() if len(g["values"]) > 1]


def write_summary(sweep: Sweep) -> tuple[Path, Path]:
    """`summary.csv` and `summary.md` in the sweep folder."""
    rows = summary_rows(sweep)
    csv_path, md_path = sweep.path / "summary.csv", sweep.path / "summary.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(text(row[k]) for k in COLUMNS) + " |" for row in rows]
    groups = seed_groups(sweep)
    if groups:
        lines += ["", "Over seeds (mean ± std, n - 1):", "", "| config | seeds | mIoU | min | max |",
                  "|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {g['config']} | {len(g['values'])} | {g['mean']:.2f} ± {g['std']:.2f} "
            f"| {min(g['values']):.2f} | {max(g['values']):.2f} |"
            for g in groups
        ]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def text(value: Any) -> str:
    """A summary cell: two decimals for a number, `n/a` for nothing."""
    if value is None:
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)
