"""What one request may carry, and its image decoded within those limits.

Every refusal is a `RequestRefused` with the HTTP status it answers with and one sentence that names
the problem (the limit and the value, or what the bytes were), so a client learns what to change and
the server never answers user input with a 500. The checks run cheapest first: the declared body
size before the body is read, the image's header (format and size, read without decoding pixels)
before the pixels are decoded, so an oversized or bomb-like image costs no decode.

Pixels are decoded by OpenCV, as `bisenet_pl.data.preprocess.read_rgb` decodes files: the server's
mask of an uploaded file is the `predict` command's mask of the same file.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from bisenet_pl.errors import BisenetError


class RequestRefused(BisenetError):
    """A request the server will not process; `status` is the HTTP status code it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """The largest request body (bytes), image (pixels) and image side the server accepts."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_side: int = 8192

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"limits.{key}={value!r}: must be a positive integer")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_length(self, length: int) -> None:
        """Refuse a body (declared or read so far) longer than `max_bytes`: 413."""
        if length > self.max_bytes:
            raise RequestRefused(
                413, f"request body of {length} bytes is over limits.max_bytes={self.max_bytes}"
            )

    def check_size(self, width: int, height: int) -> None:
        """Refuse an image with a side over `max_side` or more than `max_pixels` pixels: 413."""
        if max(width, height) > self.max_side:
            raise RequestRefused(
                413, f"image of {width}x{height} has a side over limits.max_side={self.max_side}"
            )
        if width * height > self.max_pixels:
            raise RequestRefused(
                413,
                f"image of {width}x{height} = {width * height} pixels is over "
                f"limits.max_pixels={self.max_pixels}",
            )


def _header_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the image header alone; 415 when the bytes are no image format."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return str(img.format), int(img.size[0]), int(img.size[1])
    except Image.DecompressionBombError as e:
        raise RequestRefused(413, f"image refused as a decompression bomb: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        start = data[:8].hex(" ")
        raise RequestRefused(
            415, f"the {len(data)} bytes sent are not an image (first bytes: {start}); send a PNG or JPEG"
        ) from None


def decode_image(data: bytes, limits: Limits) -> np.ndarray:
    """The RGB uint8 (H, W, 3) array of an uploaded image, refused (`RequestRefused`) when it is empty,
    too large, not an image (415) or corrupt/truncated (400)."""
    if not data:
        raise RequestRefused(
            400, "empty request body: send an image (raw bytes, or a multipart 'file' field)"
        )
    limits.check_length(len(data))
    fmt, width, height = _header_size(data)
    limits.check_size(width, height)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RequestRefused(
            400,
            f"corrupt image: a {fmt} header ({width}x{height}) but the pixels cannot be decoded "
            "(truncated or damaged file)",
        )
    return np.ascontiguousarray(bgr[..., ::-1])


__all__ = ["Limits", "RequestRefused", "decode_image"]
