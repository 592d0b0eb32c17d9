"""Files as they really come: hidden and system files, truncated or corrupt images, EXIF orientation.

- Hidden and system files are never data: macOS `._name.jpg` resource forks and `.DS_Store`, Windows'
  `Thumbs.db` and `desktop.ini`, anything under a `__MACOSX/` or dot folder. `is_skipped` is the one rule
  the pairing, the checker and training use.
- A strict decode turns a decoder's complaints into findings: OpenCV (libjpeg, libpng, libtiff) decodes
  the first third of a truncated JPEG, prints 'Premature end of JPEG file' to stderr and returns an image
  whose rest is grey. `strict_decode` captures what the decoders print while decoding (file descriptor 2,
  so call it from one thread per process) and also decodes with Pillow, which refuses truncated data.
- EXIF orientation: training decodes images as mmseg does (cv2 with IMREAD_COLOR, mmcv's
  `imfrombytes(flag='color')`), which APPLIES the EXIF orientation, while masks are read unchanged
  (mmseg: `'unchanged'`), which does not. A photo with orientation 5-8 is therefore turned a quarter
  before training sees it; its mask is not.
- `load_image` is training's decode: cv2 `imread` (IMREAD_COLOR, as mmseg's), plus a cheap end-of-file
  test (a JPEG's EOI marker, a PNG's IEND chunk) that sends a suspicious file to Pillow's strict decode,
  so a truncated file found mid-run is one message naming it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image, ImageFile

from bisenet_pl.errors import DatasetError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: File names that operating systems and file managers leave next to data.
SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", ".directory"})
#: Folders that hold no data (a zip made on a Mac carries `__MACOSX/` with a `._` file per file).
SYSTEM_FOLDERS = frozenset({"__macosx", "@eadir", "$recycle.bin", "system volume information"})

#: EXIF orientation -> what a viewer (and cv2's IMREAD_COLOR) does to the stored pixels.
ORIENTATIONS = {
    2: "mirrored left-right",
    3: "rotated 180 degrees",
    4: "mirrored top-bottom",
    5: "transposed (mirrored and rotated 90 degrees)",
    6: "rotated 90 degrees clockwise",
    7: "transversed (mirrored and rotated 90 degrees)",
    8: "rotated 90 degrees counter-clockwise",
}
_EXIF_ORIENTATION = 0x0112


def is_skipped(path: Path, below: Path | None = None) -> bool:
    """Whether `path` is a hidden or system file (or lies in a hidden or system folder below `below`)."""
    parts = path.relative_to(below).parts if below is not None else (path.name,)
    for part in parts:
        low = part.lower()
        if part.startswith(".") or low in SYSTEM_FILES or low in SYSTEM_FOLDERS:
            return True
    return False


def orientation(path: Path | str) -> int:
    """The EXIF orientation tag (1 = as stored; 0 = none or unreadable), from the file's header."""
    try:
        with Image.open(path) as pil:
            value = pil.getexif().get(_EXIF_ORIENTATION, 0)
    except (OSError, SyntaxError, ValueError):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def orientation_note(tag: int) -> str:
    """What training does with an image whose EXIF orientation is `tag` (2..8)."""
    turned = "its height and width swap, " if tag >= 5 else ""
    return (
        f"EXIF orientation {tag} ({ORIENTATIONS.get(tag, 'unknown')}): training decodes it as mmseg does "
        f"(cv2 IMREAD_COLOR applies the orientation), so {turned}while its mask is read as stored "
        "(unrotated). If the mask was drawn on the stored pixels, the pair is misaligned: rotate the mask "
        "the same way, or save the image with the orientation applied and the tag removed"
    )


@dataclass
class Decoded:
    """A strict decode: `image` BGR uint8 as training sees it (None if it does not decode), `problems`
    (what the decoders said), and the EXIF orientation tag."""

    image: np.ndarray | None
    problems: list[str] = field(default_factory=list)
    orientation: int = 0


_capture_lock = threading.Lock()


def _captured(call: Callable[[], T]) -> tuple[T, str]:
    """(call(), text the C libraries wrote to stderr meanwhile). Holds a lock: one capture at a time."""
    with _capture_lock, tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            result = call()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
    return result, text


def _decoder_lines(text: str) -> list[str]:
    """The decoder's own messages, without OpenCV's `[ WARN:0@0.05] global file.cpp:123` prefixes."""
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("[") and "]" in line:
            line = line.split("]", 1)[1].strip()
            if line.startswith("global "):
                line = line.split(" ", 2)[-1].strip()
        if line not in lines:
            lines.append(line)
    return lines


def pillow_problem(path: Path | str) -> str | None:
    """Pillow's full decode of `path`: None if it decodes completely, else why not ('image file is
    truncated (17 bytes not processed)')."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with Image.open(path) as pil:
            pil.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return str(err) or type(err).__name__
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return None


def strict_decode(path: Path | str, capture: bool = True) -> Decoded:
    """Decode `path` as training does and report every complaint: cv2's stderr messages (with `capture`,
    which redirects file descriptor 2 for the call: use it where one thread decodes), Pillow's refusal of
    truncated data, and the EXIF orientation."""
    path = Path(path)
    if not path.is_file():
        return Decoded(None, ["cannot read: no such file"])
    if capture:
        image, text = _captured(lambda: cv2.imread(str(path), cv2.IMREAD_COLOR))
    else:
        image, text = cv2.imread(str(path), cv2.IMREAD_COLOR), ""
    problems = _decoder_lines(text)
    if image is None:
        problems.insert(0, "OpenCV cannot decode it")
    refused = pillow_problem(path)
    if refused is not None:
        problems.append(f"Pillow: {refused}")
    return Decoded(image, problems, orientation(path) if image is not None else 0)


def describe(problems: list[str]) -> str:
    """One line for a file's decoding problems, naming the usual cause."""
    text = "; ".join(problems[:3])
    low = text.lower()
    if "premature end" in low or "truncated" in low:
        return f"truncated ({text}): an interrupted copy or download; copy the file again"
    if "corrupt" in low or "cannot decode" in low or "cannot identify" in low:
        return f"corrupt ({text}): copy the file again, or remove it from the set"
    return f"decoder warnings ({text})"


def _looks_complete(path: Path) -> bool:
    """A cheap end-of-file test: a JPEG ends with EOI (FF D9, maybe zero-padded), a PNG with IEND."""
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        return True
    try:
        with path.open("rb") as f:
            f.seek(max(path.stat().st_size - 4096, 0))
            tail = f.read()
    except OSError:
        return False
    if suffix == ".png":
        return b"IEND" in tail[-32:]
    return b"\xff\xd9" in tail[-64:] or tail.rstrip(b"\x00").endswith(b"\xff\xd9")


def load_image(path: Path) -> np.ndarray:
    """Training's decode: BGR uint8 (H, W, 3) from cv2 `IMREAD_COLOR` (as mmseg: EXIF orientation applied);
    a file that does not decode, or that ends early (confirmed by Pillow), is a `DatasetError` naming it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    problem = None
    if image is None:
        problem = "it does not decode (missing, corrupt, truncated or not an image)"
    elif not _looks_complete(path):
        refused = pillow_problem(path)
        if refused is not None:
            problem = f"it is truncated ({refused})"
    if problem is not None or image is None:
        raise DatasetError(
            f"Cannot use image {path}: {problem}. Copy it again or remove it; "
            "`python -m bisenet_pl.data.check <root>` lists every such file"
        )
    return image


__all__ = [
    "ORIENTATIONS",
    "Decoded",
    "describe",
    "is_skipped",
    "load_image",
    "orientation",
    "orientation_note",
    "pillow_problem",
    "strict_decode",
]
