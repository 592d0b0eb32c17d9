"""The decoded-frame cache: each split's frames decoded once into raw `.npy` files, for machines whose disk
is bigger than their CPU budget (docs/speed.md).

    python -m bisenet_pl.data.cache data.root=data/cityscapes [data.cache=<dir>] [splits=[train,val]]
    python -m bisenet_pl.train experiment=4x4 data.root=data/cityscapes data.cache=data/cityscapes_cache

Decoding the two PNGs is most of a training item's cost; reading a raw frame from the page cache or a
fast disk is nearly free. Per split, `<cache>/<split>/` holds `<stem>.image.npy` (uint8 H x W x 3, RGB)
and `<stem>.label.npy` (uint8 H x W train ids, 255 = ignore, already mapped and checked) for every frame,
and `manifest.json`, written last: the source files' names, sizes and modification times and each
frame's shape. The bytes needed are printed before anything is written (a split that would not fit is
refused then); every frame written is read back and compared pixel for pixel with cv2's / PIL's decode
of its PNGs. A write that runs out of disk removes what it wrote and says how much was needed.

Reading (`bisenet_pl.data.frame_cache.FrameCache`): a split's cache is used only if it matches its
source exactly: every frame of `data.root` in the manifest with the same size and modification time, no
frame missing or added, every `.npy` present with its size. Anything else is refused with the file
named and the command that rewrites the cache: a stale cache is never used silently. The items are the
PNG path's items, bit for bit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bisenet_pl.data.frame_cache_writer import write_split
from bisenet_pl.errors import DatasetError

__all__ = ["main", "write_split"]


def _parse(argv: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {"data.root": None, "data.cache": None, "splits": ["train", "val"]}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+") not in options:
            raise SystemExit(
                f"unknown argument {arg!r}: use data.root=<Cityscapes folder>, data.cache=<folder> "
                "(default: <root>_cache beside it) and splits=[train,val]"
            )
        key = key.lstrip("+")
        if key == "splits":
            options[key] = [s.strip() for s in value.strip("[]").split(",") if s.strip()]
        else:
            options[key] = value
    if not options["data.root"]:
        base = os.environ.get("BISENET_PL_ROOT", ".")
        options["data.root"] = os.path.join(base, "data", "synthetic_cityscapes")
    if not options["data.cache"]:
        options["data.cache"] = str(Path(options["data.root"]).expanduser()).rstrip("/") + "_cache"
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = _parse(sys.argv[1:] if argv is None else argv)
    root, cache = Path(options["data.root"]), Path(options["data.cache"])
    try:
        for split in options["splits"]:
            write_split(root, cache, split)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"[cache] done: train with data.root={root} data.cache={cache}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
