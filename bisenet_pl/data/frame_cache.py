"""Reading the decoded-frame cache that `python -m bisenet_pl.data.cache` writes (docs/speed.md): a
split's `<stem>.image.npy` / `<stem>.label.npy` frames and its `manifest.json`.

Reading (`FrameCache`): a split's cache is used only if it matches its source exactly: every frame of
`data.root` in the manifest with the same size and modification time, no frame missing or added, every
`.npy` present with its size. Anything else is refused with the file named and the command that rewrites
the cache: a stale cache is never used silently. The items are the PNG path's items, bit for bit.

It knows the dataset's samples only by their `image`/`label` paths, so the dataset module can open a
cache without this module importing it back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bisenet_pl.errors import DatasetError

MANIFEST = "manifest.json"
VERSION = 1
_NPY_HEADER = 128  # numpy's header for these arrays (format 1.0): 128 bytes


class CacheError(DatasetError):
    """A cache that cannot be written, or does not match its source."""


def _rewrite_hint(root: Path, cache: Path) -> str:
    return f"rewrite it with `python -m bisenet_pl.data.cache data.root={root} data.cache={cache}`"


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _npy_names(sample: Any, image_root: Path) -> tuple[str, str]:
    stem = str(sample.image.relative_to(image_root))[: -len("_leftImg8bit.png")]
    return stem + ".image.npy", stem + ".label.npy"


def _frame_bytes(height: int, width: int, labelled: bool) -> int:
    return (height * width * 3 + _NPY_HEADER) + ((height * width + _NPY_HEADER) if labelled else 0)


@dataclass(frozen=True)
class CachedFrame:
    image: Path
    label: Path | None


class FrameCache:
    """One split's cache, checked against its source when opened (see the module's docstring)."""

    def __init__(self, cache: str | Path, root: str | Path, split: str, samples: Sequence[Any]) -> None:
        self.cache = Path(cache).expanduser().resolve()
        # not resolved: the samples were found under this path, and a symlinked folder inside it (a split
        # on another disk) must keep its name relative to the root
        self.root = Path(root).expanduser()
        self.split = split
        folder = self.cache / split
        hint = _rewrite_hint(self.root, self.cache)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise CacheError(
                f"no cache of split {split!r} in {self.cache} ({manifest_path} is missing: never written, or "
                f"its writing was interrupted): {hint}"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
            entries = {e["image"]: e for e in manifest["frames"]}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CacheError(f"cache manifest {manifest_path} is unreadable ({err}): {hint}") from None
        if manifest.get("version") != VERSION:
            raise CacheError(f"cache {folder} has format {manifest.get('version')}, not {VERSION}: {hint}")
        self.frames: list[CachedFrame] = []
        seen = set()
        for sample in samples:
            key = str(Path(sample.image).relative_to(self.root))
            entry = entries.get(key)
            if entry is None:
                raise CacheError(
                    f"{sample.image} is not in the cache {folder} (added to {self.root} after the cache was "
                    f"written): {hint}"
                )
            seen.add(key)
            self._check_source(Path(sample.image), entry["image_stat"], hint)
            label = None
            if sample.label is not None:
                if entry.get("label") != str(Path(sample.label).relative_to(self.root)):
                    raise CacheError(
                        f"the label of {sample.image} is {sample.label}, the cache holds "
                        f"{entry.get('label')}: {hint}"
                    )
                self._check_source(Path(sample.label), entry["label_stat"], hint)
                label = self._check_npy(folder / entry["label_npy"], entry["shape"], 1, hint)
            image = self._check_npy(folder / entry["image_npy"], entry["shape"], 3, hint)
            self.frames.append(CachedFrame(image, label))
        missing = sorted(set(entries) - seen)
        if missing:
            raise CacheError(
                f"{self.root / missing[0]} is in the cache {folder} but no longer in the dataset "
                f"({len(missing)} such file{'s' if len(missing) > 1 else ''}): {hint}"
            )

    def _check_source(self, path: Path, stat: dict[str, int], hint: str) -> None:
        try:
            now = _stat(path)
        except OSError:
            raise CacheError(f"{path} is missing, but the cache {self.cache} holds it: {hint}") from None
        if now != stat:
            what = "size" if now["size"] != stat["size"] else "modification time"
            raise CacheError(
                f"{path} changed since the cache {self.cache} was written (its {what} differs): {hint}"
            )

    @staticmethod
    def _check_npy(path: Path, shape: Sequence[int], channels: int, hint: str) -> Path:
        h, w = int(shape[0]), int(shape[1])
        try:
            size = path.stat().st_size
        except OSError:
            raise CacheError(f"cache file {path} is missing: {hint}") from None
        if size != h * w * channels + _NPY_HEADER:
            want = h * w * channels + _NPY_HEADER
            raise CacheError(f"cache file {path} has {size} bytes, not {want}: {hint}")
        return path

    def image(self, index: int) -> np.ndarray:
        """The frame as RGB uint8 (H, W, 3), memory-mapped (read-only)."""
        return np.load(self.frames[index].image, mmap_mode="r", allow_pickle=False)

    def label(self, index: int) -> np.ndarray | None:
        """The train ids as uint8 (H, W), memory-mapped (read-only); None for an unlabelled frame."""
        path = self.frames[index].label
        return None if path is None else np.load(path, mmap_mode="r", allow_pickle=False)


__all__ = ["MANIFEST", "VERSION", "CacheError", "CachedFrame", "FrameCache"]
