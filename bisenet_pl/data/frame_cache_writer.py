"""Writing the decoded-frame cache (`python -m bisenet_pl.data.cache`, docs/speed.md): each frame of a
Cityscapes split decoded once into raw `.npy` files, the bytes needed checked first, every frame read back
and compared pixel for pixel with its PNGs, `manifest.json` written last; a write that fails leaves
nothing behind. Reading is `bisenet_pl.data.frame_cache`."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from bisenet_pl.data.cityscapes import (
    LABEL_ID_TO_TRAIN_ID,
    Sample,
    find_samples,
    load_image,
    load_label,
)
from bisenet_pl.data.frame_cache import (
    MANIFEST,
    VERSION,
    CacheError,
    _frame_bytes,
    _npy_names,
    _stat,
)
from bisenet_pl.data.png import HEADER_BYTES, png_header


def _png_size(path: Path) -> tuple[int, int]:
    """(height, width) from a PNG's header (no decoding); a file that is not a PNG is named."""
    with open(path, "rb") as f:
        header = png_header(f.read(HEADER_BYTES))
    if header is None:
        raise CacheError(f"{path} is not a PNG (no IHDR header): cannot cache it")
    return header.height, header.width


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def _reference_image_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else bgr[..., ::-1]


def _reference_label(sample: Sample) -> np.ndarray:
    assert sample.label is not None
    with Image.open(sample.label) as pil:
        label = np.array(pil)
    return LABEL_ID_TO_TRAIN_ID[label] if sample.label_kind == "labelIds" else label


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def write_split(root: Path, cache: Path, split: str, echo: Any = print) -> Path:
    """Decode every frame of `split` into `<cache>/<split>/`, check each against its PNGs, write the
    manifest last. Returns the split's folder. Refuses (`CacheError`) a split that does not fit the disk,
    and removes the split's folder when the disk fills up while writing or a frame fails its check."""
    root, cache = Path(root).expanduser().resolve(), Path(cache).expanduser().resolve()
    samples = find_samples(root, split, ignore_missing_labels=split == "test")
    image_root = root / "leftImg8bit" / split
    shapes = [_png_size(s.image) for s in samples]
    needed = sum(_frame_bytes(h, w, s.label is not None) for (h, w), s in zip(shapes, samples, strict=True))
    out = cache / split
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    echo(
        f"[cache] {split}: {len(samples)} frames from {root}, {_gib(needed)} on disk "
        f"({_gib(needed / max(len(samples), 1))} per frame) into {out}; {_gib(free)} free there"
    )
    if needed > free:
        raise CacheError(
            f"not enough disk for the {split} cache in {cache}: {_gib(needed)} needed, {_gib(free)} free. "
            "Point data.cache at a bigger disk, or train from the PNGs (no data.cache)."
        )
    if out.exists():
        shutil.rmtree(out)  # a previous (possibly partial) cache of this split is replaced whole
    frames: list[dict[str, Any]] = []
    start = time.perf_counter()
    try:
        for i, (sample, (h, w)) in enumerate(zip(samples, shapes, strict=True)):
            image_name, label_name = _npy_names(sample, image_root)
            image = load_image(sample.image, "rgb")
            if image.shape[:2] != (h, w):
                raise CacheError(f"{sample.image}: header says {h}x{w}, decoded {image.shape[:2]}")
            _save(out / image_name, image)
            reference = _reference_image_rgb(sample.image)
            if reference is None or not np.array_equal(np.load(out / image_name, mmap_mode="r"), reference):
                raise CacheError(f"cached pixels of {sample.image} differ from cv2's decode of the PNG")
            entry: dict[str, Any] = {
                "image": str(sample.image.relative_to(root)),
                "image_stat": _stat(sample.image),
                "image_npy": image_name,
                "shape": [h, w],
                "label": None,
            }
            if sample.label is not None:
                label = load_label(sample)  # mapped to train ids and checked against the table
                if label.shape != (h, w):
                    raise CacheError(
                        f"Image {sample.image} is {h}x{w} but its label {sample.label} is "
                        f"{label.shape[0]}x{label.shape[1]}: they must match."
                    )
                _save(out / label_name, label)
                if not np.array_equal(np.load(out / label_name, mmap_mode="r"), _reference_label(sample)):
                    raise CacheError(f"cached labels of {sample.label} differ from PIL's decode of the PNG")
                entry.update(
                    label=str(sample.label.relative_to(root)),
                    label_kind=sample.label_kind,
                    label_stat=_stat(sample.label),
                    label_npy=label_name,
                )
            frames.append(entry)
            if (i + 1) % 100 == 0 or i + 1 == len(samples):
                rate = (i + 1) / max(time.perf_counter() - start, 1e-9)
                echo(f"[cache] {split}: {i + 1}/{len(samples)} frames written and checked ({rate:.1f}/s)")
        manifest = {"version": VERSION, "split": split, "frames": frames}
        tmp = out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, out / MANIFEST)
    except OSError as err:
        shutil.rmtree(out, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise CacheError(
                f"the disk of {cache} filled up while writing the {split} cache ({len(frames)} of "
                f"{len(samples)} frames written): {_gib(needed)} were needed in all, "
                f"{_gib(shutil.disk_usage(cache).free)} are free now. Removed {out}. Free some space or "
                "point data.cache at a bigger disk."
            ) from None
        raise CacheError(f"cannot write the {split} cache in {out}: {err}. Removed {out}.") from None
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a frame that failed its check, or Ctrl-C: nothing partial
        raise
    return out
