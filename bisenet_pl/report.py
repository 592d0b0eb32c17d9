"""`python -m bisenet_pl.report <run or sweep folder>`: `report.html` (self-contained) and `report/*.png`.

A run folder (training or evaluate) gets curves, validation, the per-class table, the confusion matrix, a
fixed grid of val images and what produced the numbers; a sweep folder gets its table, mean ± std over
seeds per configuration and every job's curves. Nothing else in the folder changes (docs/report.md).

Examples:
    python -m bisenet_pl.report outputs/train/runs/<run>
    python -m bisenet_pl.report outputs/train/multiruns/<sweep> [--images 0]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from bisenet_pl.cli import print_error, quiet_environment

log = logging.getLogger("bisenet_pl.report")


def _compose(config_name: str, overrides: list[str]) -> Any:
    """The composed (unresolved) config, inside a running Hydra app (train) or on its own."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name, overrides=overrides)
    else:
        with initialize_config_module("bisenet_pl.conf", version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def _config_diff(run: Any) -> tuple[list[Any] | None, str]:
    from bisenet_pl.reporting.runs import config_diff

    if run.kind != "train":
        rows = [(o.split("=", 1)[0], "default", o.split("=", 1)[-1]) for o in run.overrides if "=" in o]
        return rows, "evaluate's defaults (conf/eval.yaml): its command-line overrides"
    if not isinstance(run.config, dict):
        return None, "no run_config.yaml in the run folder"
    exp = run.experiment
    base = f"experiment={exp}" if exp else "the default config (no experiment)"
    try:
        return config_diff(_compose("train", [f"experiment={exp}"] if exp else []), run.config), base
    except Exception as err:  # an experiment renamed or removed since the run
        return None, f"{base} cannot be composed any more ({type(err).__name__}: {err})"


def _datamodule(run: Any) -> Any:
    """The run's datamodule, built from its saved config without preparing or generating anything."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import bisenet_pl.cli.resolvers  # noqa: F401  (the resolvers the saved configs use)

    cfg = OmegaConf.create(run.config)
    if "paths" in cfg:
        cfg.paths.output_dir = str(run.path)
    return instantiate(cfg.data)


def _panels(run: Any, datamodule: Any, count: int) -> tuple[list[Any] | None, str | None]:
    from bisenet_pl.data.transforms import build_test_transform
    from bisenet_pl.reporting.samples import val_panels

    if count <= 0:
        return None, "not asked for (--images 0)"
    if run.checkpoint is None or not Path(run.checkpoint).is_file():
        return None, f"no checkpoint to predict with ({run.checkpoint or 'none saved yet'})"
    try:
        datamodule = datamodule if datamodule is not None else _datamodule(run)
        results = run.results or {}
        split = results.get("split") if run.kind == "evaluate" else getattr(datamodule, "val_split", "val")
        scale = tuple(results.get("test_scale") or datamodule.test_scale)
        dataset = datamodule.make_dataset(split, build_test_transform(scale), False, True)
        backend = str(results.get("backend", "torch"))
        panels = val_panels(
            run.checkpoint, dataset, count, backend, scale, ignore_index=datamodule.ignore_index
        )
    except Exception as err:
        return None, f"the val images could not be read or predicted ({type(err).__name__}: {err})"
    return panels, None


def report(folder: str | Path, datamodule: Any = None, images: int = 4) -> Path:
    """Write the report of a run or sweep folder; ReportError (one line) when it is neither."""
    from bisenet_pl.reporting.run_report import write_run_report
    from bisenet_pl.reporting.runs import folder_kind, load_run
    from bisenet_pl.reporting.sweep import load_sweep, write_sweep_report

    folder = Path(folder)
    if folder_kind(folder) == "sweep":
        return write_sweep_report(load_sweep(folder))
    run = load_run(folder)
    panels, missing = _panels(run, datamodule, images)
    diff, base = _config_diff(run)
    palette = getattr(datamodule, "palette", None) if datamodule is not None else None
    if palette is None and run.config and panels:
        palette = getattr(_datamodule(run), "palette", None)
    ignore = int(getattr(datamodule, "ignore_index", 255)) if datamodule is not None else 255
    return write_run_report(run, panels, missing, diff, base, palette, ignore)


def report_after(folder: Path, datamodule: Any = None) -> Path | None:
    """For `train` and `evaluate` (`report=true`): write the report, never fail the command over it."""
    try:
        path = report(folder, datamodule)
    except Exception as err:
        log.warning("report not written for %s: %s: %s", folder, type(err).__name__, err)
        return None
    log.info("report: %s", path)
    return path


def main(argv: list[str] | None = None) -> None:
    quiet_environment()
    from bisenet_pl.errors import BisenetError

    parser = argparse.ArgumentParser(prog="python -m bisenet_pl.report", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a run folder (train or evaluate) or a sweep folder")
    parser.add_argument("--images", type=int, default=4, help="val images in the grid (0: none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = report(args.folder, images=args.images)
    except BisenetError as err:
        print_error(str(err))
        raise SystemExit(2) from None
    print(f"report: {path}")
    print(f"figures: {path.parent / 'report'}/*.png")


if __name__ == "__main__":
    main()
