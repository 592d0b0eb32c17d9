"""A CSV log that a resumed run continues: one `csv/metrics.csv` per run folder, not one per attempt.

Lightning's `CSVLogger` starts `version_1/` after a resume (or, given the same version, deletes the old
`metrics.csv`), so the curves of one run split across files. Here the version is fixed, the file is
kept, and when the resumed run logs its first step the rows at or after that step (logged after the
checkpoint it resumed from, and about to be trained again) are dropped: the file reads as one run.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        self._first_step_seen = False
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        """Keep the previous attempts' rows (Lightning deletes them here)."""

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if not self._first_step_seen and step is not None:
            self._first_step_seen = True
            self._drop_rows_from(step)
        super().log_metrics(metrics_dict, step)

    def _drop_rows_from(self, step: int) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") in (None, "") or float(r["step"]) < step]
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)


class RunCSVLogger(CSVLogger):
    """`CSVLogger` writing `<save_dir>/<name>/metrics.csv`, continued across resumes of the run."""

    def __init__(self, save_dir: str, name: str = "csv", **kwargs: Any) -> None:
        super().__init__(save_dir, name=name, version="", **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if not isinstance(self._experiment, _ContinuingWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
