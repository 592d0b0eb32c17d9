"""After a Hydra multirun: one table of every job's overrides and final mIoU, and the sweep's report.

A Hydra callback (registered in `conf/hydra/default.yaml`), so it runs once in the launching process
after all jobs have finished, whatever the launcher (basic, submitit local or SLURM) or sweeper (basic,
Optuna). It reads what each job wrote into its own folder (`bisenet_pl.reporting.sweep.load_sweep`), so
a job that failed or is still requeued shows up as such instead of being silently missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bisenet_pl.reporting.sweep import COLUMNS, Sweep, load_sweep, seed_groups, summary_rows, text
from bisenet_pl.reporting.sweep import write_summary as write_summary_files

log = logging.getLogger(__name__)


def print_summary(sweep: Sweep, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = summary_rows(sweep)
    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("job", "mIoU", "aAcc", "global_step") else "left")
    best = max((r["mIoU"] for r in rows if r["mIoU"] is not None), default=None)
    for row in rows:
        style = "bold green" if best is not None and row["mIoU"] == best else None
        table.add_row(*(text(row[k]) for k in COLUMNS), style=style)
    console = Console()
    console.print(table)
    for g in seed_groups(sweep):
        console.print(
            f"{g['config']}: mIoU {g['mean']:.2f} ± {g['std']:.2f} over {len(g['values'])} seeds "
            f"(min {min(g['values']):.2f}, max {max(g['values']):.2f})"
        )


def summarise(sweep_dir: Path, report: bool) -> None:
    """The summary files and table of a sweep folder, and (with `report`) its report.html; a report that
    fails costs the sweep nothing: one warning with the command that writes it later."""
    sweep = load_sweep(sweep_dir)
    csv_path, md_path = write_summary_files(sweep)
    print_summary(sweep, f"sweep {sweep_dir}")
    log.info("sweep summary: %s, %s", csv_path, md_path)
    if not report:
        return
    from bisenet_pl.reporting.sweep import write_sweep_report

    try:
        log.info("sweep report: %s", write_sweep_report(sweep))
    except Exception as err:  # noqa: BLE001  (a picture must never turn a finished sweep into a failure)
        hint = f"python -m bisenet_pl.report {sweep_dir}"
        log.warning("sweep report not written (%s); write it with %s", err, hint)


class SweepSummary(Callback):
    """Print and save the sweep's table when a multirun ends, and (with `report=true`, the train default)
    write its report.html: the table, mean ± std over seeds and every job's curves (docs/report.md)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not any(p.name.isdigit() for p in sweep_dir.iterdir()):
            return
        summarise(sweep_dir, bool(config.get("report", False)))


def main(argv: list[str] | None = None) -> None:
    """`python -m bisenet_pl.cli.sweeps SWEEP_DIR`: (re)make the summary of a sweep folder, e.g. one whose
    launching process was killed before the sweep ended (its jobs still wrote their folders)."""
    import argparse

    from bisenet_pl.errors import BisenetError

    parser = argparse.ArgumentParser(prog="python -m bisenet_pl.cli.sweeps", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="outputs/train/multiruns/<date>_<time>_<us>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir}: no such folder")
    try:
        summarise(args.sweep_dir, report=False)
    except BisenetError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
