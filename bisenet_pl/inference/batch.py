"""Many images in, files out: what `python -m bisenet_pl.predict` runs over a file, a folder or a glob.

An unreadable image is reported and skipped; the others are still written.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from bisenet_pl.data.preprocess import read_rgb
from bisenet_pl.errors import BisenetError, DatasetError
from bisenet_pl.inference.predictor import Predictor

OUTPUT_KINDS = ("color", "overlay", "trainid", "labelid")


IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def find_images(spec: str | Path) -> list[tuple[Path, Path]]:
    """(image path, output-relative path) for a file, a folder (recursive) or a glob pattern.

    Output paths keep the sub-folders below the folder (or below the glob's first wildcard), so
    `dir/*/img.png` writes `a/img.png` and `b/img.png`, not one `img.png` twice. Two inputs that would
    still land on one output file (`x.png` beside `x.jpg`) are refused before anything is written.
    """
    spec_path = Path(spec).expanduser()
    if spec_path.is_file():
        found = [(spec_path, Path(spec_path.name))]
    elif spec_path.is_dir():
        files = sorted(
            p for p in spec_path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        found = [(p, p.relative_to(spec_path)) for p in files]
    else:
        pattern = str(spec_path)
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matches and not glob.has_magic(pattern):
            raise DatasetError(f"input={spec}: no such file or folder")
        base = _fixed_prefix(pattern)
        found = [(p, p.relative_to(base)) for p in matches]
    _refuse_collisions(found)
    return found


def _fixed_prefix(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: `data/*/x.png` -> `data`."""
    parts = Path(pattern).parts
    fixed: list[str]
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            fixed = list(parts[:i])
            break
    else:
        fixed = list(parts[:-1])
    return Path(*fixed) if fixed else Path(".")


def _refuse_collisions(found: list[tuple[Path, Path]]) -> None:
    by_output: dict[Path, list[Path]] = {}
    for path, rel in found:
        by_output.setdefault(output_stem(rel), []).append(path)
    clashes = [paths for paths in by_output.values() if len(paths) > 1]
    if clashes:
        shown = "; ".join(" and ".join(str(p) for p in paths) for paths in clashes[:3])
        more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        raise DatasetError(
            f"{len(clashes)} output name(s) would be written twice: {shown}{more} differ only in their "
            "extension. Rename one of each, or predict them in separate runs"
        )


def output_stem(rel: Path) -> Path:
    """`<city>_<seq>_<frame>_leftImg8bit.png` -> `<city>_<seq>_<frame>`, keeping sub-folders."""
    name = rel.name
    for suffix in ("_leftImg8bit.png",):
        if name.endswith(suffix):
            return rel.with_name(name[: -len(suffix)])
    return rel.with_suffix("")


def predict_images(
    predictor: Predictor,
    images: Iterable[tuple[Path, Path]],
    out_dir: Path,
    outputs: Iterable[str],
    opacity: float = 0.5,
) -> tuple[int, list[tuple[Path, str]]]:
    """Write the outputs for each image; returns (images written, [(failed image, reason)])."""
    import numpy as np
    from PIL import Image
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bisenet_pl.data.cityscapes import CLASSES, train_ids_to_label_ids

    outputs = list(outputs)
    unknown = sorted(set(outputs) - set(OUTPUT_KINDS))
    if unknown or not outputs:
        raise BisenetError(f"outputs={outputs}: choose from {', '.join(OUTPUT_KINDS)}")
    if "labelid" in outputs and tuple(predictor.class_names) != CLASSES:
        raise BisenetError(
            f"outputs=[labelid] writes Cityscapes' label ids, but this model's classes are "
            f"{', '.join(predictor.class_names[:5])}{', ...' if len(predictor.class_names) > 5 else ''}: "
            "its dataset has no label-id mapping. Use outputs=[trainid] (class indices) or color"
        )
    images = list(images)
    done, failed = 0, []
    columns = (TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("predict", total=len(images))
        for path, rel in images:
            try:
                rgb = read_rgb(path)
            except DatasetError as err:
                failed.append((path, str(err)))
                progress.console.print(f"[yellow]skipped[/] {path}: cannot decode the image")
                progress.advance(task)
                continue
            mask = predictor(rgb)
            stem = output_stem(rel)
            for kind in outputs:
                if kind == "color":
                    picture = predictor.colorize(mask)
                elif kind == "overlay":
                    picture = predictor.overlay(rgb, mask, opacity)
                elif kind == "trainid":
                    picture = mask
                else:
                    picture = train_ids_to_label_ids(mask)
                target = out_dir / kind / stem.with_suffix(".png")
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.ascontiguousarray(picture)).save(target)
                except OSError as err:  # a read-only or full output folder: one line, not PIL's traceback
                    raise BisenetError(
                        f"cannot write {target}: {err.strerror or err}; {done} image(s) were written before "
                        "it. Choose another output= folder"
                    ) from None
            done += 1
            progress.advance(task)
    return done, failed
