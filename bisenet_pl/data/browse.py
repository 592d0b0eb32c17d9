"""`python -m bisenet_pl.data.browse [data=folder data.root=...] [n=8] [seed=0]`: see what the network is fed.

Writes two PNG grids into the command's folder (or `out=`): `browse_train.png`, the first `n` training
samples after augmentation for this seed (as a run with `data.num_workers=0` and that seed trains on them),
and `browse_test.png`, `n` val images through the test pipeline; each tile has its label overlaid in the
dataset's palette. Any dataset config works (Cityscapes, `data=folder`, the presets).

Examples:
    python -m bisenet_pl.data.browse
    python -m bisenet_pl.data.browse data=folder data.root=data/my_set n=12 seed=3
"""

from __future__ import annotations

from pathlib import Path

from bisenet_pl.cli import CONFIG_PATH, quiet_environment, readable_errors

quiet_environment()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="browse")
@readable_errors
def main(cfg: DictConfig) -> None:
    import lightning as L
    from hydra.utils import instantiate

    from bisenet_pl.reporting.browse import grid, shrink, test_samples, training_samples

    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    n, names = int(cfg.n), list(datamodule.class_names)
    for kind, samples in (
        ("train", training_samples(datamodule, n)),
        ("test", test_samples(datamodule, n)),
    ):
        samples = [shrink(s, int(cfg.max_tile)) for s in samples]
        title = (
            f"{kind} pipeline, seed {cfg.seed}: {len(samples)} samples, labels overlaid "
            "(ignored pixels: the image only)"
        )
        picture = grid(
            samples, datamodule.palette, names, int(datamodule.ignore_index), int(cfg.columns), title
        )
        path = out / f"browse_{kind}.png"
        picture.save(path)
        print(f"{kind}: {path} ({len(samples)} samples, {picture.width}x{picture.height})")


if __name__ == "__main__":
    main()
