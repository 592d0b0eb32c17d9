"""Pictures of runs, sweeps and data: the run report (`python -m bisenet_pl.report`), the sweep report and
the augmented-data browser (`python -m bisenet_pl.browse`). matplotlib draws the figures (imported only
by the modules that draw); nothing here imports Hydra. docs/report.md describes every panel."""
