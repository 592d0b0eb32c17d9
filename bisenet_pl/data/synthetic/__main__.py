"""`python -m bisenet_pl.data.synthetic ROOT [--layout NAME | --export NAME] [--train N ...]`: write a
synthetic dataset: Cityscapes' layout (the default), another dataset's layout (`--layout camvid`,
`ade20k`, `binary`, `five`) or an annotation tool's export (`--export cvat`, `voc`, `colour`, `flat`,
`binary`). Unset sizes are each kind's own defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from bisenet_pl.data.synthetic.exports import LAYOUTS as EXPORTS
from bisenet_pl.data.synthetic.exports import make_export
from bisenet_pl.data.synthetic.layouts import LAYOUTS, make_layout_dataset
from bisenet_pl.data.synthetic.writer import DEFAULTS, make_synthetic_cityscapes
from bisenet_pl.errors import DatasetError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bisenet_pl.data.synthetic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, help="output folder (must not hold a dataset yet)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--layout", choices=sorted(LAYOUTS), help="another dataset's layout")
    kind.add_argument("--export", choices=EXPORTS, help="an annotation tool's export")
    parser.add_argument("--train", type=int, help=f"train images (Cityscapes: {DEFAULTS['n_train']})")
    parser.add_argument("--val", type=int, help=f"val images (Cityscapes: {DEFAULTS['n_val']})")
    parser.add_argument("--test", type=int, help=f"test images, Cityscapes only ({DEFAULTS['n_test']})")
    parser.add_argument("--height", type=int, help=f"Cityscapes: {DEFAULTS['height']} (real: 1024)")
    parser.add_argument("--width", type=int, help=f"Cityscapes: {DEFAULTS['width']} (real: 2048)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objects", type=int, help="--export: object classes besides background (1-4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = {"n_train": args.train, "n_val": args.val, "height": args.height, "width": args.width}
    given = {k: v for k, v in sizes.items() if v is not None}
    held = sorted(args.root.iterdir()) if args.root.is_dir() else []
    if held:
        print(
            f"error: {args.root} already holds a dataset ({held[0].name}); choose another folder or delete it"
        )
        return 1
    try:
        if args.export:
            extra = {} if args.objects is None else {"objects": args.objects}
            make_export(args.export, args.root, seed=args.seed, **given, **extra)
            what = f"a {args.export} export"
        elif args.layout:
            make_layout_dataset(args.layout, args.root, seed=args.seed, **given)
            what = f"the {args.layout} layout"
        else:
            options = {**DEFAULTS, **given, "seed": args.seed}
            if args.test is not None:
                options["n_test"] = args.test
            make_synthetic_cityscapes(args.root, **options)
            what = "Cityscapes' layout"
            print(f"Wrote a synthetic Cityscapes-layout dataset to {args.root} ({options})")
            return 0
    except DatasetError as err:
        print(f"error: {err}")
        return 1
    print(f"Wrote a synthetic dataset in {what} to {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
