"""`python -m bisenet_pl.browse [data=<preset>] [data.<key>=<value> ...] [--n 8] [--seed 0]`: see what
the network is fed.

Writes two PNG grids into `--out` (default `outputs/browse/<date>_<time>/`): `browse_train.png`, the first
`--n` training samples after augmentation for `--seed` (what a run with that seed and `data.num_workers=0`
trains on first), and `browse_test.png`, `--n` val images through the test pipeline; each tile has its
label overlaid in the dataset's palette. `data=` and `data.<key>=` are the train command's: Cityscapes (the
default), `data=folder`, the presets (camvid, ade20k, ...). Same seed, same grids (docs/report.md#browse).

Examples:
    python -m bisenet_pl.browse
    python -m bisenet_pl.browse data=folder data.root=data/my_set --n 12 --seed 3
    python -m bisenet_pl.browse data.root=data/cityscapes data.crop_size=[512,1024]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from bisenet_pl.errors import BisenetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bisenet_pl.browse", description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="*", help="data=<preset> and data.<key>=<value>, as for train")
    parser.add_argument("--n", type=int, default=8, help="samples per grid")
    parser.add_argument("--seed", type=int, default=0, help="the training order and augmentation draws")
    parser.add_argument("--columns", type=int, default=4, help="tiles per row")
    parser.add_argument("--max-tile", type=int, default=512, help="longest tile side before scaling down")
    parser.add_argument("--out", type=Path, default=None, help="folder for the grids")
    args = parser.parse_intermixed_args(argv)
    from bisenet_pl.reporting.browse import datamodule_for, grid, shrink, test_samples, training_samples

    try:
        data, options = "cityscapes", {}
        for arg in args.data:
            key, sep, value = arg.partition("=")
            if key == "data" and sep:
                data = value
            elif key.startswith("data.") and sep:
                options[key[len("data.") :]] = yaml.safe_load(value)
            else:
                raise BisenetError(f"unknown argument {arg!r}: give data=<preset> or data.<key>=<value>")
        datamodule = datamodule_for(data, options, args.seed)
        datamodule.prepare_data()
        out = args.out or Path("outputs") / "browse" / time.strftime("%Y-%m-%d_%H-%M-%S")
        out.mkdir(parents=True, exist_ok=True)
        names, ignore = list(datamodule.class_names), int(datamodule.ignore_index)
        for kind, samples in (
            ("train", training_samples(datamodule, args.n)),
            ("test", test_samples(datamodule, args.n)),
        ):
            samples = [shrink(s, args.max_tile) for s in samples]
            title = f"{kind} pipeline, seed {args.seed}: labels overlaid (ignored pixels: the image only)"
            picture = grid(samples, datamodule.palette, names, ignore, args.columns, title)
            path = out / f"browse_{kind}.png"
            picture.save(path)
            print(f"{kind}: {path} ({len(samples)} samples, {picture.width}x{picture.height})")
    except BisenetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
