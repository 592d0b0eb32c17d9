"""The training pipeline's fast PNG decode: exact pixels, cheaper than libpng, checked like libpng.

Decoding a frame's two PNGs is most of a training item's cost (docs/speed.md#data-per-core), and almost
all of that is zlib's inflate. Wuffs (`pywuffs`) decodes 8-bit RGB and grey PNGs with its own inflate,
several times faster than libspng's or libpng's zlib, to the same pixels (PNG is lossless;
tests/data/test_png.py compares every path with cv2 and PIL). libspng (`pyspng`) is the fallback where
pywuffs is not installed.

Wuffs skips the checksums on purpose (speed), so a flipped bit inside a chunk would decode to different
pixels without a word. The chunk walk below checks every chunk's CRC-32 first (about 1 % of the decode),
as libpng and libspng do, so a damaged file is still refused and named.

Only the plain kind goes fast: 8 bits, RGB or grey, not interlaced, no chunk that changes how pixels
are interpreted (transparency, gamma, colour profile, EXIF). Everything else, and anything the fast
decoder cannot read, returns None: the caller decodes it with cv2 or PIL as before, so those files keep
their exact behaviour and their error messages.
"""

from __future__ import annotations

import threading
import zlib
from typing import Any, NamedTuple

import cv2
import numpy as np

try:
    import pywuffs as _wuffs  # type: ignore[import-not-found]  # a compiled module without stubs
except ImportError:  # pragma: no cover - an install without the `fastpng` extra: libspng decodes
    _wuffs = None
try:
    import pyspng as _pyspng  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - pyspng is a dependency; a broken install stays usable
    _pyspng = None

__all__ = ["DECODER", "HEADER_BYTES", "PngHeader", "png_header", "decode_plain_png"]

_COLOUR_TYPE = {"rgb": 2, "bgr": 2, "grey": 0}  # the PNG colour type each output layout decodes from
SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks before the pixels that some decoder acts on (cv2 turns an image by its EXIF orientation, for one);
# their files take the reference path, so every decoder's own behaviour stays as it was.
_INTERPRETING_CHUNKS = frozenset((b"tRNS", b"eXIf", b"iCCP", b"gAMA", b"sBIT"))

#: Which library decodes the plain PNGs: "wuffs", "libspng", or "none" (cv2 / PIL for every file).
DECODER = "wuffs" if _wuffs is not None else "libspng" if _pyspng is not None else "none"


class PngHeader(NamedTuple):
    """A PNG's IHDR fields that decide how (and whether) it is decoded fast."""

    height: int
    width: int
    bit_depth: int
    colour_type: int
    interlace: int


#: Bytes a `png_header` reads: the signature and the IHDR chunk up to its interlace byte.
HEADER_BYTES = 29


def png_header(data: bytes) -> PngHeader | None:
    """The IHDR fields from a file's first `HEADER_BYTES` bytes (or all of it); None: not a PNG."""
    if len(data) < HEADER_BYTES or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return PngHeader(height, width, data[24], data[25], data[28])


def _plain_and_intact(data: bytes) -> bool:
    """Every chunk's CRC-32 matches, the file ends with IEND, and no interpreting chunk precedes IDAT."""
    view = memoryview(data)
    pos, size, seen_pixels = len(SIGNATURE), len(data), False
    while pos + 12 <= size:
        length = int.from_bytes(view[pos : pos + 4], "big")
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 8 + length
        if end + 4 > size or zlib.crc32(view[pos + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            return False
        if kind == b"IEND":
            return seen_pixels
        if kind == b"IDAT":
            seen_pixels = True
        elif not seen_pixels and kind in _INTERPRETING_CHUNKS:
            return False
        pos = end + 4
    return False  # truncated: no IEND


class _WuffsDecoders(threading.local):
    """One Wuffs decoder per output layout and thread (a decoder is not thread-safe; DataLoader workers
    are processes, each with its own copy). Wuffs writes BGR or RGB itself: no channel swap afterwards."""

    def __init__(self) -> None:
        self.by_layout: dict[str, Any] = {}

    def get(self, layout: str) -> Any:
        decoder = self.by_layout.get(layout)
        if decoder is None:
            config = _wuffs.aux.ImageDecoderConfig()
            config.enabled_decoders = [_wuffs.ImageDecoderType.PNG]
            config.pixel_format = {"rgb": _wuffs.PixelFormat.RGB, "bgr": _wuffs.PixelFormat.BGR}.get(
                layout, _wuffs.PixelFormat.Y
            )
            decoder = self.by_layout[layout] = _wuffs.aux.ImageDecoder(config)
        return decoder


_decoders = _WuffsDecoders()


def decode_plain_png(data: bytes, layout: str) -> np.ndarray | None:
    """A plain PNG's pixels, decoded fast: `layout` "rgb" or "bgr" (H, W, 3) from an 8-bit RGB file, "grey"
    (H, W) from an 8-bit grey file. None: use the reference decoder (another kind of PNG, a damaged or
    truncated file, or one the fast decoder refuses)."""
    colour_type = _COLOUR_TYPE[layout]
    header = png_header(data)
    if DECODER == "none" or header is None:
        return None
    if (header.bit_depth, header.colour_type, header.interlace) != (8, colour_type, 0):
        return None
    if not _plain_and_intact(data):  # the whole file's chunks: only for the kind that goes fast
        return None
    if _wuffs is not None:
        result = _decoders.get(layout).decode(data)
        if result.error_message:
            return None
        pixels: np.ndarray = result.pixbuf
        return pixels[..., 0] if layout == "grey" else pixels
    try:
        pixels = _pyspng.load(data)
    except Exception:  # the reference decoder says what is wrong, in its own words
        return None
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if layout == "bgr" else pixels
