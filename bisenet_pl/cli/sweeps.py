"""After a Hydra multirun: one table of every job's overrides and final mIoU.

A Hydra callback (registered in `conf/hydra/default.yaml`), so it runs once in the launching process
after all jobs have finished, whatever the launcher (basic, submitit local or SLURM) or sweeper (basic,
Optuna). It reads what each job wrote into its own folder (`results.json`, `.hydra/overrides.yaml`), so
a job that failed or is still requeued shows up as such instead of being silently missing.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

COLUMNS = ("job", "overrides", "mIoU", "aAcc", "global_step", "status")
#: The CSV also keeps every job's full command-line overrides.
CSV_COLUMNS = (*COLUMNS, "all_overrides")


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder (`<sweep dir>/<job num>/`), sorted by job number."""
    rows = []
    sweep_dir = Path(sweep_dir)
    jobs = sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    per_job = []
    for job in jobs:
        overrides_file = job / ".hydra" / "overrides.yaml"
        per_job.append(
            list(yaml.safe_load(overrides_file.read_text()) or []) if overrides_file.is_file() else []
        )
    # What the sweep varied: the overrides not shared by every job (all of them for a one-job sweep).
    shared = set.intersection(*(set(o) for o in per_job)) if len(per_job) > 1 else set()
    for job, overrides in zip(jobs, per_job, strict=True):
        row: dict[str, Any] = {
            "job": int(job.name),
            "overrides": " ".join(o for o in overrides if o not in shared),
            "all_overrides": " ".join(overrides),
            "status": "no results",
        }
        results_file = job / "results.json"
        if results_file.is_file():
            payload = json.loads(results_file.read_text())
            res = payload.get("results", {})
            row.update(
                mIoU=res.get("mIoU"),
                aAcc=res.get("aAcc"),
                global_step=payload.get("global_step"),
                status="done",
            )
        rows.append(row)
    return rows


def seed_spread(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs that differ only in `seed=`, grouped: mean ± standard deviation (n - 1) of their mIoU.

    BiSeNetV2 varies by about 2 mIoU from seed to seed, so a comparison of two configs needs the
    spread over seeds, not one number per config.
    """
    groups: dict[str, list[float]] = {}
    for row in rows:
        if row.get("status") != "done" or not isinstance(row.get("mIoU"), int | float):
            continue
        parts = str(row.get("all_overrides", "")).split()
        if not any(p.startswith("seed=") for p in parts):
            continue
        key = " ".join(p for p in parts if not p.startswith("seed=")) or "(defaults)"
        groups.setdefault(key, []).append(float(row["mIoU"]))
    spread = []
    for key, values in groups.items():
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        spread.append({"config": key, "seeds": len(values), "mIoU_mean": mean, "mIoU_std": std,
                       "mIoU_min": min(values), "mIoU_max": max(values)})  # fmt: skip
    return spread


def write_summary(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """`summary.csv` and `summary.md` in the sweep folder."""
    sweep_dir = Path(sweep_dir)
    csv_path, md_path = sweep_dir / "summary.csv", sweep_dir / "summary.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in CSV_COLUMNS})
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k)) for k in COLUMNS) + " |")
    spread = seed_spread(rows)
    if spread:
        lines += [
            "",
            "Over seeds (mean ± std, n - 1):",
            "",
            "| config | seeds | mIoU | min | max |",
            "|---|---|---|---|---|",
        ]
        for g in spread:
            lines.append(
                f"| {g['config']} | {g['seeds']} | {g['mIoU_mean']:.2f} ± {g['mIoU_std']:.2f} "
                f"| {g['mIoU_min']:.2f} | {g['mIoU_max']:.2f} |"
            )
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def print_summary(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("job", "mIoU", "aAcc", "global_step") else "left")
    best = max((r["mIoU"] for r in rows if isinstance(r.get("mIoU"), (int, float))), default=None)
    for row in rows:
        style = "bold green" if best is not None and row.get("mIoU") == best else None
        table.add_row(*(_fmt(row.get(k)) for k in COLUMNS), style=style)
    Console().print(table)
    for g in seed_spread(rows):
        Console().print(
            f"{g['config']}: mIoU {g['mIoU_mean']:.2f} ± {g['mIoU_std']:.2f} over {g['seeds']} seeds "
            f"(min {g['mIoU_min']:.2f}, max {g['mIoU_max']:.2f})"
        )


class SweepSummary(Callback):
    """Print and save the sweep's table when a multirun ends, and (with `report=true`, the train default)
    write its report.html: the table, mean ± std over seeds and every job's curves (docs/report.md)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect(sweep_dir)
        if not rows:
            return
        csv_path, md_path = write_summary(sweep_dir, rows)
        print_summary(rows, f"sweep {sweep_dir}")
        log.info("sweep summary: %s, %s", csv_path, md_path)
        if config.get("report", False):
            write_report(sweep_dir)


def write_report(sweep_dir: Path) -> None:
    """The sweep's report.html; a report that fails costs the sweep nothing (its jobs and summary are
    written): one warning with the command that writes it later."""
    from bisenet_pl.reporting.sweep import load_sweep, write_sweep_report

    try:
        log.info("sweep report: %s", write_sweep_report(load_sweep(sweep_dir)))
    except Exception as err:  # noqa: BLE001  (a picture must never turn a finished sweep into a failure)
        log.warning(
            "sweep report not written (%s); write it with python -m bisenet_pl.report %s", err, sweep_dir
        )


def main(argv: list[str] | None = None) -> None:
    """`python -m bisenet_pl.cli.sweeps SWEEP_DIR`: (re)make the summary of a sweep folder, e.g. one whose
    launching process was killed before the sweep ended (its jobs still wrote their folders)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bisenet_pl.cli.sweeps", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="outputs/train/multiruns/<date>_<time>_<us>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir}: no such folder")
    rows = collect(args.sweep_dir)
    if not rows:
        parser.error(f"{args.sweep_dir}: no job folders (0/, 1/, ...) in it")
    csv_path, md_path = write_summary(args.sweep_dir, rows)
    print_summary(rows, f"sweep {args.sweep_dir}")
    print(f"written: {csv_path}, {md_path}")


if __name__ == "__main__":
    main()
