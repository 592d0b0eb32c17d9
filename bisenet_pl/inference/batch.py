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
    """(image path, output-relative path) for a file, a folder (recursive) or a glob pattern."""
    spec_path = Path(spec).expanduser()
    if spec_path.is_file():
        return [(spec_path, Path(spec_path.name))]
    if spec_path.is_dir():
        files = sorted(
            p for p in spec_path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        return [(p, p.relative_to(spec_path)) for p in files]
    matches = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
    if not matches and not any(ch in str(spec) for ch in "*?["):
        raise DatasetError(f"input={spec}: no such file or folder")
    return [(p, Path(p.name)) for p in matches]


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

    from bisenet_pl.data.cityscapes import train_ids_to_label_ids

    outputs = list(outputs)
    unknown = sorted(set(outputs) - set(OUTPUT_KINDS))
    if unknown or not outputs:
        raise BisenetError(f"outputs={outputs}: choose from {', '.join(OUTPUT_KINDS)}")
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
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(picture)).save(target)
            done += 1
            progress.advance(task)
    return done, failed
