"""`python -m bisenet_pl.data.synthetic ROOT [--train N ...]`: write a synthetic dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from bisenet_pl.data.synthetic.writer import DEFAULTS, make_synthetic_cityscapes
from bisenet_pl.errors import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bisenet_pl.data.synthetic",
        description="Write a synthetic street-scene dataset in Cityscapes' layout (leftImg8bit/, gtFine/).",
    )
    parser.add_argument("root", type=Path, help="output folder (must not hold a dataset yet)")
    parser.add_argument("--train", type=int, default=DEFAULTS["n_train"], help="train images (default 40)")
    parser.add_argument("--val", type=int, default=DEFAULTS["n_val"], help="val images (default 10)")
    parser.add_argument("--test", type=int, default=DEFAULTS["n_test"], help="test images (default 5)")
    parser.add_argument(
        "--height", type=int, default=DEFAULTS["height"], help="default 256 (Cityscapes: 1024)"
    )
    parser.add_argument("--width", type=int, default=DEFAULTS["width"], help="default 512 (real: 2048)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = parser.parse_args(argv)
    if (args.root / "leftImg8bit").exists():
        print(
            f"error: {args.root} already holds a dataset (leftImg8bit/); choose another folder or delete it"
        )
        return 1
    try:
        make_synthetic_cityscapes(
            args.root, args.train, args.val, args.test, args.height, args.width, args.seed
        )
    except DatasetError as err:
        print(f"error: {err}")
        return 1
    print(
        f"Wrote a synthetic Cityscapes-layout dataset to {args.root} (train {args.train}, val {args.val}, "
        f"test {args.test}; {args.height}x{args.width})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
