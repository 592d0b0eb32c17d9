"""`python -m bisenet_pl.data.check <root> [data=<preset>] [data.<key>=<value> ...]`: is this dataset usable?

Decodes every image and mask of every split (in parallel, with a progress bar) and reports, per split:
counts, image sizes, images without masks and masks without images, size mismatches, unreadable files,
every stored mask value with its pixel count and what it decodes to, values outside the class table (with
the fix), classes that never occur, and the class frequencies. Exit status 1 when something would break
training or make it useless (0/255 masks read with 255 as ignore), 0 otherwise. The options are the
train command's `data.*` keys, e.g.

    python -m bisenet_pl.data.check data/my_set data.label_map="{0: 0, 255: 1}"
    python -m bisenet_pl.data.check data=camvid data.root=data/CamVid
"""

from __future__ import annotations

import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import yaml

from bisenet_pl.data.folder import Pair, read_mask, unknown_values_message
from bisenet_pl.errors import BisenetError, DatasetError

SPLITS = ("train", "val", "test")


@dataclass
class SplitReport:
    split: str
    images: int = 0
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    without_mask: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    values: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    unknown: list[int] = field(default_factory=list)
    never_seen: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return (
            len(self.without_mask)
            + len(self.size_mismatch)
            + len(self.unreadable)
            + len(self.unknown)
            + len(self.hints)
            - (1 if self.unknown else 0)  # the unknown values' hint is counted once
        )


def _check_pair(pair: Pair) -> tuple[Pair, tuple[int, int] | None, np.ndarray | None, str | None]:
    """(pair, image size, mask value histogram, error) of one pair, decoding both files."""
    image = cv2.imread(str(pair.image), cv2.IMREAD_COLOR)
    if image is None:
        return pair, None, None, f"{pair.image}: cannot decode the image"
    size = (int(image.shape[0]), int(image.shape[1]))
    if pair.mask is None:
        return pair, size, None, None
    try:
        mask = read_mask(pair.mask)
    except DatasetError as err:
        return pair, size, None, str(err)
    if mask.shape != size:
        return (
            pair,
            size,
            None,
            f"{pair.mask}: mask {mask.shape[0]}x{mask.shape[1]} vs image {size[0]}x{size[1]}",
        )
    return pair, size, np.bincount(mask.ravel(), minlength=256), None


def check_split(module: Any, split: str, workers: int = 4, progress: Any = None) -> SplitReport | None:
    """Decode one split of a `FolderDataModule`; None when the split does not exist."""
    report = SplitReport(split)
    try:
        pairs, orphans = module.pairs(split, masks_required=False)
    except DatasetError:
        return None
    report.images = len(pairs)
    report.masks_without_image = [str(p) for p in orphans]
    task = progress.add_task(split, total=len(pairs)) if progress is not None else None
    with ThreadPoolExecutor(max(workers, 1)) as pool:  # cv2 and PIL decode without the GIL
        for pair, size, hist, error in pool.map(_check_pair, pairs):
            if progress is not None:
                progress.advance(task)
            if size is not None:
                report.sizes[size] += 1
            if error is None and pair.mask is None:
                report.without_mask.append(str(pair.image))
            elif error is not None and "vs image" in error:
                report.size_mismatch.append(error)
            elif error is not None:
                report.unreadable.append(error)
            elif hist is not None:
                report.values += hist
    enc = module.encoding
    table = enc.table()
    seen = np.flatnonzero(report.values)
    report.unknown = [int(v) for v in seen if table[v] < 0]
    decoded = {int(table[v]) for v in seen if table[v] >= 0}
    names = module.class_names
    report.never_seen = [names[c] for c in range(len(names)) if c not in decoded]
    if report.unknown:
        report.hints.append(unknown_values_message(report.unknown, enc))
    raw = {int(v) for v in seen}
    if raw == {0, 255} and not enc.label_map and 1 not in decoded:
        report.hints.append(
            "masks hold only 0 and 255, and 255 is the ignore index: the model would learn one class. "
            "Binary masks? add data.label_map={0: 0, 255: 1}"
        )
    return report


def print_report(module: Any, reports: list[SplitReport]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    names, table = module.class_names, module.encoding.table()
    console.print(f"[bold]{module.root}[/]: {len(names)} classes, ignore index {module.ignore_index}")
    for r in reports:
        sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in r.sizes.most_common(4))
        more = f" and {len(r.sizes) - 4} other sizes" if len(r.sizes) > 4 else ""
        console.print(f"\n[bold]{r.split}[/]: {r.images} images; sizes (HxW) {sizes}{more}")
        for title, items in (
            ("images without a mask", r.without_mask),
            ("masks without an image", r.masks_without_image),
            ("size mismatches", r.size_mismatch),
            ("unreadable files", r.unreadable),
        ):
            if items:
                console.print(f"  [red]{len(items)} {title}[/]: " + "; ".join(items[:5]))
        values = Table("stored value", "pixels", "share", "decodes to", title=f"{r.split}: mask values")
        total = max(int(r.values.sum()), 1)
        for v in np.flatnonzero(r.values):
            t = int(table[v])
            what = (
                "[red]UNKNOWN[/]" if t < 0 else ("ignore" if t == module.ignore_index else f"{t} {names[t]}")
            )
            values.add_row(str(v), f"{int(r.values[v]):,}", f"{100 * r.values[v] / total:.2f} %", what)
        console.print(values)
        if r.never_seen:
            console.print(f"  [yellow]classes that never occur[/]: {', '.join(r.never_seen)}")
        for hint in r.hints:
            console.print(f"  [red]fix[/]: {hint}")
    bad = sum(r.problems for r in reports)
    console.print(f"\n{'[red]' if bad else '[green]'}{bad} problem(s) to fix before training[/]")


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
        known = {"root", "preset", "image_dir", "mask_dir", "mask_suffix", "list_file", "splits", "classes",
                 "palette", "ignore_index", "label_map", "reduce_zero_label"}  # fmt: skip
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise DatasetError(
                f"data.{unknown[0]} is not a key the checker reads ({', '.join(sorted(known))})"
            )
        module = FolderDataModule(**kwargs)
        with Progress(transient=True) as progress:
            reports = [r for s in SPLITS if (r := check_split(module, s, workers, progress)) is not None]
        if not reports:
            raise DatasetError(f"{module.root}: no split found ({', '.join(SPLITS)})")
    except BisenetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(module, reports)
    return 1 if any(r.problems for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
