"""Outlines of the things in a street scene, in a unit box (u right, v down): people, riders,
vehicles from behind and the side, two-wheelers; clipping of polygons to the frame."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class SceneObject:
    """One polygon: its Cityscapes label, the points (float, unclipped) and how to paint it."""

    label: str
    points: np.ndarray  # (N, 2) x, y in pixels
    look: str = ""  # key into _LOOKS (defaults to the label)
    color: tuple[float, float, float] = (0.0, 0.0, 0.0)  # base RGB 0..255, drawn per object
    extra: dict[str, Any] = field(default_factory=dict)
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x0, y0, x1, y1 before clipping


# ---------------------------------------------------------------------------------------------------
# Geometry: outlines in a unit box (u right, v down), perspective, clipping
# ---------------------------------------------------------------------------------------------------

PERSON = [
    (0.38, 0.0),
    (0.62, 0.0),
    (0.64, 0.12),
    (0.58, 0.16),
    (0.85, 0.2),
    (0.95, 0.55),
    (0.82, 0.56),
    (0.76, 0.32),
    (0.74, 0.58),
    (0.7, 1.0),
    (0.54, 1.0),
    (0.5, 0.62),
    (0.46, 1.0),
    (0.3, 1.0),
    (0.26, 0.58),
    (0.24, 0.32),
    (0.18, 0.56),
    (0.05, 0.55),
    (0.15, 0.2),
    (0.42, 0.16),
    (0.36, 0.12),
]
RIDER = [
    (0.3, 0.0),
    (0.55, 0.0),
    (0.58, 0.14),
    (0.72, 0.28),
    (1.0, 0.42),
    (0.96, 0.52),
    (0.7, 0.44),
    (0.66, 0.62),
    (0.82, 0.78),
    (0.78, 1.0),
    (0.62, 1.0),
    (0.6, 0.82),
    (0.32, 0.7),
    (0.24, 0.32),
    (0.34, 0.14),
]
CAR_REAR = [
    (0.22, 0.0),
    (0.78, 0.0),
    (0.88, 0.38),
    (1.0, 0.45),
    (1.0, 0.85),
    (0.92, 0.85),
    (0.92, 1.0),
    (0.74, 1.0),
    (0.74, 0.88),
    (0.26, 0.88),
    (0.26, 1.0),
    (0.08, 1.0),
    (0.08, 0.85),
    (0.0, 0.85),
    (0.0, 0.45),
    (0.12, 0.38),
]
BOX_REAR = [
    (0.04, 0.0),
    (0.96, 0.0),
    (0.97, 0.1),
    (1.0, 0.12),
    (1.0, 0.9),
    (0.9, 0.9),
    (0.9, 1.0),
    (0.72, 1.0),
    (0.72, 0.92),
    (0.28, 0.92),
    (0.28, 1.0),
    (0.1, 1.0),
    (0.1, 0.9),
    (0.0, 0.9),
    (0.0, 0.12),
    (0.03, 0.1),
]
CAR_SIDE = [
    (0.0, 0.5),
    (0.06, 0.36),
    (0.24, 0.3),
    (0.36, 0.0),
    (0.74, 0.0),
    (0.86, 0.3),
    (1.0, 0.38),
    (1.0, 0.85),
    (0.88, 0.85),
    (0.88, 1.0),
    (0.72, 1.0),
    (0.72, 0.85),
    (0.3, 0.85),
    (0.3, 1.0),
    (0.14, 1.0),
    (0.14, 0.85),
    (0.0, 0.85),
]
TRUCK_SIDE = [
    (0.0, 0.36),
    (0.03, 0.3),
    (0.18, 0.27),
    (0.2, 0.0),
    (1.0, 0.0),
    (1.0, 0.88),
    (0.88, 0.88),
    (0.88, 1.0),
    (0.75, 1.0),
    (0.75, 0.88),
    (0.3, 0.88),
    (0.3, 1.0),
    (0.16, 1.0),
    (0.16, 0.88),
    (0.0, 0.88),
]
BUS_SIDE = [
    (0.0, 0.04),
    (0.03, 0.0),
    (1.0, 0.0),
    (1.0, 0.9),
    (0.86, 0.9),
    (0.86, 1.0),
    (0.72, 1.0),
    (0.72, 0.9),
    (0.26, 0.9),
    (0.26, 1.0),
    (0.12, 1.0),
    (0.12, 0.9),
    (0.0, 0.9),
]
TRAIN_SIDE = [(0.0, 0.1), (0.02, 0.0), (1.0, 0.0), (1.0, 0.92), (0.0, 0.92)]  # fmt: skip


def unit_shape(template: list[tuple[float, float]], x0: float, y0: float, w: float, h: float) -> np.ndarray:
    pts = np.asarray(template, dtype=np.float64)
    return np.stack([x0 + pts[:, 0] * w, y0 + pts[:, 1] * h], axis=1)


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 16, jitter: np.ndarray | None = None):
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    radius = 1.0 if jitter is None else jitter
    return np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], axis=1)


def two_wheeler_outline(
    x0: float, y_ground: float, w: float, h: float, facing: int, heavy: bool
) -> np.ndarray:
    """Side view of a bicycle or motorcycle (heavier body): the wheels' outer arcs joined by the frame."""
    r = 0.36 * h
    back_x, front_x = x0 + r, x0 + w - r
    cy = y_ground - r
    rear = [(back_x + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(np.pi * 0.25, np.pi * 1.6, 7)]
    top = 0.62 if heavy else 0.78
    frame = [
        (back_x + 0.2 * w, y_ground - top * h),
        (back_x + 0.35 * w, y_ground - h),
        (front_x - 0.05 * w, y_ground - 0.95 * h),
    ]
    front = [(front_x + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(np.pi * 1.4, np.pi * 2.75, 7)]
    bottom = [(x0 + 0.5 * w, cy + (0.5 if heavy else 0.15) * r)]
    pts = np.asarray(rear + frame + front + bottom)
    if facing < 0:  # mirror around the box centre
        pts[:, 0] = 2 * x0 + w - pts[:, 0]
    return pts


def clip_to_frame(points: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Sutherland-Hodgman clipping to the image, rounded to integer pixels (Cityscapes stores ints)."""
    pts = [tuple(p) for p in points]
    bounds = (
        (lambda p: p[0] >= 0, lambda a, b: _cut_x(a, b, 0.0)),
        (lambda p: p[0] <= width - 1, lambda a, b: _cut_x(a, b, width - 1.0)),
        (lambda p: p[1] >= 0, lambda a, b: _cut_y(a, b, 0.0)),
        (lambda p: p[1] <= height - 1, lambda a, b: _cut_y(a, b, height - 1.0)),
    )
    for inside, cut in bounds:
        out: list[tuple[float, float]] = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cut(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cut(prev, cur))
        pts = out
        if len(pts) < 3:
            return None
    arr = np.rint(np.asarray(pts)).astype(np.int64)
    keep = np.any(arr != np.roll(arr, 1, axis=0), axis=1)
    arr = arr[keep]
    if len(arr) < 3:
        return None
    x, y = arr[:, 0], arr[:, 1]
    if abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) < 1:  # degenerate (zero area)
        return None
    return arr


def _cut_x(a: tuple[float, float], b: tuple[float, float], x: float) -> tuple[float, float]:
    t = (x - a[0]) / (b[0] - a[0])
    return x, a[1] + t * (b[1] - a[1])


def _cut_y(a: tuple[float, float], b: tuple[float, float], y: float) -> tuple[float, float]:
    t = (y - a[1]) / (b[1] - a[1])
    return a[0] + t * (b[0] - a[0]), y
