"""What `python -m bisenet_pl.data.check` finds, split by split: every image and mask decoded strictly
and checked against the class table (`check_split`, one `SplitReport` per split), and the report those
findings make on a rich console (`print_report`, which the command calls)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bisenet_pl.data.folder import (
    LabelEncoding,
    Pair,
    Value,
    colour_mask_without_table,
    format_value,
    read_mask,
    unknown_values_message,
    value_counts,
)
from bisenet_pl.data.strict import describe, orientation_note, strict_decode
from bisenet_pl.errors import DatasetError

SPLITS = ("train", "val", "test")
#: How many files are named per unknown value.
FIRST_FILES = 3


@dataclass
class SplitReport:
    split: str
    images: int = 0
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    without_mask: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    orientation: list[str] = field(default_factory=list)
    rotated_ok: list[str] = field(default_factory=list)
    values: Counter[Value] = field(default_factory=Counter)
    unknown: list[Value] = field(default_factory=list)
    unknown_files: dict[Value, list[tuple[str, int]]] = field(default_factory=dict)
    never_seen: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return (
            len(self.without_mask)
            + len(self.size_mismatch)
            + len(self.unreadable)
            + len(self.orientation)
            + len(self.unknown)
            + len(self.hints)
            - (1 if self.unknown else 0)  # the unknown values' hint is counted once
        )


@dataclass
class PairResult:
    pair: Pair
    size: tuple[int, int] | None = None
    counts: dict[Value, int] | None = None
    broken: list[str] = field(default_factory=list)
    mismatch: str | None = None
    orientation: str | None = None
    rotated_ok: str | None = None


def _check_pair(pair: Pair, encoding: LabelEncoding) -> PairResult:
    """Decode one pair strictly: the image as training does (and Pillow), the mask through `encoding`."""
    result = PairResult(pair)
    decoded = strict_decode(pair.image)
    if decoded.problems:
        result.broken.append(f"{pair.image}: {describe(decoded.problems)}")
    if decoded.image is None:
        return result
    size = (int(decoded.image.shape[0]), int(decoded.image.shape[1]))
    result.size = size
    if pair.mask is None:
        return result
    try:
        stored = encoding.prepare(read_mask(pair.mask))
    except DatasetError as err:
        result.broken.append(str(err))
        return result
    if stored.ndim == 3 and not encoding.colours:
        result.broken.append(colour_mask_without_table(pair.mask))
        return result
    shape = (int(stored.shape[0]), int(stored.shape[1]))
    tag = decoded.orientation
    if tag >= 2:
        as_stored = (size[1], size[0]) if tag >= 5 else size
        if shape == size and shape != as_stored:
            result.rotated_ok = f"{pair.image} (EXIF orientation {tag})"
        else:
            sizes = f"image {size[0]}x{size[1]} as decoded, mask {shape[0]}x{shape[1]}"
            tell = (
                "" if shape != size else " (same size either way: the sizes cannot tell whether they align)"
            )
            result.orientation = f"{pair.image} with {pair.mask}: {sizes}{tell}; {orientation_note(tag)}"
    elif shape != size:
        result.mismatch = f"{pair.mask}: mask {shape[0]}x{shape[1]} vs image {size[0]}x{size[1]}"
    if result.orientation is None and result.mismatch is None:
        result.counts = value_counts(stored)
    return result


def check_split(
    module: Any, split: str, workers: int = 4, progress: Any = None, skipped: list[Path] | None = None
) -> SplitReport | None:
    """Decode one split of a `FolderDataModule`; None when the split does not exist."""
    report = SplitReport(split)
    found: list[Path] = []
    try:
        pairs, orphans = module.pairs(split, masks_required=False, skipped=found)
    except DatasetError:
        return None
    if skipped is not None:
        skipped.extend(found)
    report.skipped = [str(p) for p in found]
    report.images = len(pairs)
    report.masks_without_image = [str(p) for p in orphans]
    enc = module.encoding
    task = progress.add_task(split, total=len(pairs)) if progress is not None else None
    with ThreadPoolExecutor(max(workers, 1)) as pool:  # cv2 and PIL decode without the GIL
        for result in pool.map(lambda p: _check_pair(p, enc), pairs):
            if progress is not None:
                progress.advance(task)
            pair = result.pair
            if result.size is not None:
                report.sizes[result.size] += 1
            report.unreadable.extend(result.broken)
            if result.size is not None and pair.mask is None:
                report.without_mask.append(str(pair.image))
            if result.mismatch:
                report.size_mismatch.append(result.mismatch)
            if result.orientation:
                report.orientation.append(result.orientation)
            if result.rotated_ok:
                report.rotated_ok.append(result.rotated_ok)
            for value, n in (result.counts or {}).items():
                report.values[value] += n
                if enc.lookup(value) < 0:
                    files = report.unknown_files.setdefault(value, [])
                    if len(files) < FIRST_FILES:
                        files.append((str(pair.mask), n))
    seen = sorted(report.values, key=_order)
    report.unknown = [v for v in seen if enc.lookup(v) < 0]
    decoded = {enc.lookup(v) for v in seen if enc.lookup(v) >= 0}
    names = module.class_names
    report.never_seen = [names[c] for c in range(len(names)) if c not in decoded]
    if report.unknown:
        report.hints.append(unknown_values_message(report.unknown, enc))
    if set(report.values) == {0, 255} and not enc.label_map and 1 not in decoded:
        report.hints.append(
            "masks hold only 0 and 255, and 255 is the ignore index: the model would learn one class. "
            "Binary masks? add data.label_map={0: 0, 255: 1}"
        )
    return report


def _order(value: Value) -> tuple[int, Any]:
    return (1, value) if isinstance(value, tuple) else (0, value)


def make_console() -> Any:
    """rich's console; to a file, a pipe or a log its lines are never wrapped (paths and tables whole)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=100_000, soft_wrap=True, highlight=False)
    return console


def print_report(module: Any, reports: list[SplitReport], console: Any = None) -> None:
    from rich.table import Table

    console = console or make_console()
    names, enc = module.class_names, module.encoding
    console.print(f"[bold]{module.root}[/]: {len(names)} classes, ignore index {module.ignore_index}")
    skipped = sorted({s for r in reports for s in r.skipped})
    if skipped:
        console.print(
            f"skipped {len(skipped)} hidden or system file(s) (._*, .DS_Store, Thumbs.db, __MACOSX/, ...), "
            f"e.g. {skipped[0]}"
        )
    for r in reports:
        sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in r.sizes.most_common(4))
        more = f" and {len(r.sizes) - 4} other sizes" if len(r.sizes) > 4 else ""
        console.print(f"\n[bold]{r.split}[/]: {r.images} images; sizes (HxW) {sizes}{more}")
        for title, items in (
            ("images without a mask", r.without_mask),
            ("masks without an image", r.masks_without_image),
            ("size mismatches", r.size_mismatch),
            ("broken files (truncated, corrupt or undecodable)", r.unreadable),
            (
                "images whose EXIF orientation training applies (their masks are read as stored)",
                r.orientation,
            ),
        ):
            if items:
                console.print(f"  [red]{len(items)} {title}[/]:")
                for item in items[:20]:
                    console.print(f"    {item}", markup=False)
                if len(items) > 20:
                    console.print(f"    ... and {len(items) - 20} more")
        if r.rotated_ok:
            console.print(
                f"  {len(r.rotated_ok)} image(s) carry an EXIF rotation and their masks match the turned "
                f"view (as training decodes them), e.g. {r.rotated_ok[0]}",
                markup=False,
            )
        values = Table("stored value", "pixels", "share", "decodes to", title=f"{r.split}: mask values")
        total = max(sum(r.values.values()), 1)
        shown = sorted(r.values, key=_order)
        for v in shown[:64]:
            t = enc.lookup(v)
            what = (
                "[red]UNKNOWN[/]" if t < 0 else ("ignore" if t == module.ignore_index else f"{t} {names[t]}")
            )
            values.add_row(format_value(v), f"{r.values[v]:,}", f"{100 * r.values[v] / total:.2f} %", what)
        if len(shown) > 64:
            values.add_row("...", f"{len(shown) - 64} more", "", "")
        console.print(values)
        if r.unknown:
            console.print(f"  [red]{len(r.unknown)} unknown value(s)[/], first files holding each:")
            for v in r.unknown[:10]:
                files = "; ".join(f"{path} ({n:,} px)" for path, n in r.unknown_files.get(v, []))
                console.print(f"    {format_value(v)} ({r.values[v]:,} px in all): {files}", markup=False)
        if r.never_seen:
            console.print(f"  [yellow]classes that never occur[/]: {', '.join(r.never_seen)}")
        for hint in r.hints:
            console.print(f"  [red]fix[/]: {hint}")
    bad = sum(r.problems for r in reports)
    console.print(f"\n{'[red]' if bad else '[green]'}{bad} problem(s) to fix before training[/]")
