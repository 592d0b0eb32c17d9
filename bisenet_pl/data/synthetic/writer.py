"""Writing a synthetic dataset in Cityscapes' folders and file names, atomically and once: a file
lock makes concurrent first runs (DDP ranks, sweep jobs) wait for one writer."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bisenet_pl.data.cityscapes import (
    IMAGE_SUFFIX,
    LABEL_IDS_SUFFIX,
    SYNTHETIC_MARKER,
)
from bisenet_pl.data.synthetic.paint import render_scene
from bisenet_pl.errors import DatasetError

log = logging.getLogger(__name__)


# Cityscapes' cities per split (train: 18 cities, val: 3, test: 6), so file names look like the real ones.
CITIES: dict[str, tuple[str, ...]] = {
    "train": (
        "aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
        "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar",
        "zurich",
    ),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
}  # fmt: skip
_SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}
DEFAULTS: dict[str, int] = {"n_train": 40, "n_val": 10, "n_test": 5, "height": 256, "width": 512, "seed": 0}
_FORMAT_VERSION = 1


def _write_png(path: Path, array: np.ndarray) -> None:
    """PNG via PIL (8-bit L/RGB/RGBA or 16-bit grey), always with the same settings: byte-identical output."""
    Image.fromarray(array).save(path, format="PNG", compress_level=1)  # uint16 -> 16-bit grey ("I;16")


def _write_frame(root: Path, split: str, index: int, seed: int, height: int, width: int) -> None:
    cities = CITIES[split]
    city = cities[index % len(cities)]
    stem = f"{city}_{index // len(cities):06d}_{19 + 10 * (index % 7):06d}"
    frame = render_scene([seed, _SPLIT_INDEX[split], index], height, width)
    image_dir = root / "leftImg8bit" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    _write_png(image_dir / f"{stem}{IMAGE_SUFFIX}", frame["image"])
    if split == "test":  # no public test labels: images only
        return
    label_dir = root / "gtFine" / split / city
    label_dir.mkdir(parents=True, exist_ok=True)
    _write_png(label_dir / f"{stem}{LABEL_IDS_SUFFIX}", frame["label_ids"])
    _write_png(label_dir / f"{stem}_gtFine_instanceIds.png", frame["instance_ids"])
    _write_png(label_dir / f"{stem}_gtFine_color.png", frame["color"])
    with open(label_dir / f"{stem}_gtFine_polygons.json", "w", encoding="utf-8") as f:
        json.dump(frame["polygons"], f, indent="\t")


def make_synthetic_cityscapes(
    root: str | Path,
    n_train: int = DEFAULTS["n_train"],
    n_val: int = DEFAULTS["n_val"],
    n_test: int = DEFAULTS["n_test"],
    height: int = DEFAULTS["height"],
    width: int = DEFAULTS["width"],
    seed: int = DEFAULTS["seed"],
) -> Path:
    """Write a synthetic Cityscapes-layout dataset under `root` and return `root`.

    Layout and names as Cityscapes (docs/reproduction.md#data):
    `leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png` and, for train and val,
    `gtFine/<split>/<city>/<stem>_gtFine_{labelIds,instanceIds,color}.png` and `_gtFine_polygons.json`.
    labelIds hold Cityscapes label ids (ignored ones included); the dataset maps them to trainIds on load.
    A marker file records the arguments.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if value < 0:
            raise DatasetError(f"{name} must be >= 0, got {value}")
    if height < 32 or width < 32:
        raise DatasetError(f"The synthetic images need at least 32x32 pixels, got {height}x{width}")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        for index in range(count):
            _write_frame(root, split, index, seed, height, width)
    meta = {
        "generator": "bisenet_pl.data.synthetic",
        "format_version": _FORMAT_VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "height": height,
        "width": width,
        "seed": seed,
    }
    (root / SYNTHETIC_MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return root


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX flock); elsewhere a no-op, the atomic rename still protects."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_dataset(root: str | Path, **synthetic_kwargs: Any) -> Path:
    """Make sure `root` holds a dataset: if it has no `leftImg8bit` folder, generate the synthetic one there.

    Safe when several processes (DDP ranks, nodes on a shared disk) call it at once: generation happens
    under a lock file beside `root`, into a temporary folder that is renamed into place, `leftImg8bit`
    last, so a reader never sees a half-written set. `synthetic_kwargs` go to `make_synthetic_cityscapes`.
    """
    root = Path(root).expanduser()
    if (root / "leftImg8bit").is_dir():
        return root
    unknown = set(synthetic_kwargs) - set(DEFAULTS)
    if unknown:
        raise DatasetError(f"Unknown synthetic dataset options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    root.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(root.parent / f".{root.name}.lock"):
        if (root / "leftImg8bit").is_dir():  # another process finished while we waited
            return root
        args = {**DEFAULTS, **synthetic_kwargs}
        log.info(
            "No dataset in %s: generating a synthetic Cityscapes-layout set there (train %d, val %d, test %d "
            "images of %dx%d, seed %d). Point data.root at real Cityscapes to train on it.",
            root,
            args["n_train"],
            args["n_val"],
            args["n_test"],
            args["height"],
            args["width"],
            args["seed"],
        )
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
        try:
            make_synthetic_cityscapes(tmp, **args)
            for name in (SYNTHETIC_MARKER, "gtFine", "leftImg8bit"):  # leftImg8bit last: it marks "done"
                src, dst = tmp / name, root / name
                if src.exists() and not dst.exists():
                    os.replace(src, dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
