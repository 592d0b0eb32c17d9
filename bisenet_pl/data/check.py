"""`python -m bisenet_pl.data.check <root> [data=<preset>] [data.<key>=<value> ...]`: is this dataset usable?

Decodes every image and mask of every split (in parallel, with a progress bar) and names every file that
would break or mislead training, per split: images without masks and masks without images, size
mismatches, truncated or corrupt images (a strict decode: the decoders' warnings, such as libjpeg's
'Premature end of JPEG file', are findings), masks that do not decode, images whose EXIF orientation
training applies while their masks stay as stored, every stored mask value (or colour) with its pixel
count and what it decodes to, values outside the class table with the first files holding each, classes
that never occur, and the class frequencies. Hidden and system files (`._a.jpg`, `.DS_Store`,
`Thumbs.db`) are skipped and counted once. Exit status 1 when something would break training or make it
useless (0/255 masks read with 255 as ignore), 0 otherwise; 2 for a bad argument. Nothing is written.
The options are the train command's `data.*` keys, e.g.

    python -m bisenet_pl.data.check data/my_set data.label_map="{0: 0, 255: 1}"
    python -m bisenet_pl.data.check data=camvid data.root=data/CamVid
    python -m bisenet_pl.data.check data=cvat data.root=data/cvat_export
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from bisenet_pl.data.audit import SPLITS, check_split, make_console, print_report
from bisenet_pl.errors import BisenetError, DatasetError

__all__ = ["check_split", "main"]


def _parse(argv: list[str]) -> dict[str, Any]:
    """`<root>`, `data=<preset>`, `data.<key>=<yaml value>` and `--workers N` into datamodule kwargs."""
    kwargs: dict[str, Any] = {}
    workers = 4
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        if arg == "--workers":
            workers = int(next(args))
        elif arg.startswith("data="):
            kwargs["preset"] = arg.split("=", 1)[1]
        elif arg.startswith("data."):
            key, _, value = arg[len("data.") :].partition("=")
            kwargs[key] = yaml.safe_load(value)
        elif "=" not in arg:
            kwargs["root"] = arg
        else:
            raise DatasetError(
                f"unknown argument {arg!r}: give a folder, data=<preset> or data.<key>=<value>"
            )
    if "root" not in kwargs:
        raise DatasetError("give the dataset folder: python -m bisenet_pl.data.check <root> [data.<key>=...]")
    kwargs["_workers"] = workers
    return kwargs


def main(argv: list[str] | None = None) -> int:
    from rich.progress import Progress

    from bisenet_pl.data.folder_datamodule import FolderDataModule

    try:
        kwargs = _parse(list(sys.argv[1:] if argv is None else argv))
        workers = kwargs.pop("_workers")
        known = {"root", "preset", "image_dir", "mask_dir", "mask_suffix", "list_file", "split_list",
                 "splits", "val_fraction", "classes", "palette", "ignore_index", "label_map",
                 "reduce_zero_label"}  # fmt: skip
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise DatasetError(
                f"data.{unknown[0]} is not a key the checker reads ({', '.join(sorted(known))})"
            )
        module = FolderDataModule(**kwargs)
        wanted: tuple[str, ...] = ("train", "val") if module.val_fraction is not None else SPLITS
        folders = [module.split_folders.get(s, s) for s in wanted]  # VOC's test is its val: checked once
        splits = [s for i, s in enumerate(wanted) if folders[i] not in folders[:i]]
        with Progress(transient=True, console=make_console()) as progress:
            reports = [r for s in splits if (r := check_split(module, s, workers, progress)) is not None]
        if not reports:
            raise DatasetError(f"{module.root}: no split found ({', '.join(SPLITS)})")
    except BisenetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(module, reports)
    return 1 if any(r.problems for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
