"""Callbacks with side effects on disk or in dashboards; all of them act on rank zero only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from bisenet_pl.metrics import format_results_table, results_to_jsonable

log = logging.getLogger(__name__)


class ResultsWriter(pl.Callback):
    """After `trainer.test`, print the per-class table and write `results.json` into the run folder.

    It reads `pl_module.test_results`, which the module sets in `on_test_epoch_end` after every rank
    has joined the confusion-matrix sum; `on_test_end` runs after that hook, on every strategy
    (ddp_spawn included, where the parent process never sees the module's attributes).
    """

    def __init__(self, output_dir: str | Path, info: dict[str, Any] | None = None, filename: str = "results.json"):
        super().__init__()
        self.output_dir = Path(output_dir)
        self.info = dict(info or {})
        self.filename = filename

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = getattr(pl_module, "test_results", None)
        if results is None:
            return
        names = list(getattr(pl_module, "class_names"))
        from rich.console import Console

        Console().print(format_results_table(results, names))
        payload = {
            **self.info,
            "global_step": int(trainer.global_step),
            "world_size": int(trainer.world_size),
            "inference": vars(pl_module.inference_cfg) if hasattr(pl_module, "inference_cfg") else None,
            "results": results_to_jsonable(results, names),
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / self.filename
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=_jsonable))
        tmp.replace(path)
        log.info("results written to %s", path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
