"""A synthetic street-scene dataset in Cityscapes' own layout, file names and label ids.

Why: the package must run end to end (train, evaluate, predict, the tests, CI) without the 11 GB
Cityscapes download, and the numbers it prints must mean something. Each scene is a road in perspective
with sidewalks, terrain, building façades, walls, fences, trees, poles with signs and lights, people,
riders and vehicles, drawn as Cityscapes polygons (written to `*_gtFine_polygons.json`) and rasterised the
way cityscapesscripts' `json2labelImg` does (PIL polygons, in file order), so the json, labelIds,
instanceIds and colour PNGs agree. The photo is painted from the same polygons with class-typical
colour ranges, textures, lighting, shadows and noise: a small network has to learn colour *and* texture
statistics, and can reach a meaningful mIoU in minutes on a CPU.

    python -m bisenet_pl.data.synthetic data/synthetic --train 40 --val 10 --test 5 --height 256 --width 512

Everything is drawn from `numpy.random.default_rng([seed, split, index])`: the same arguments give
byte-identical files.
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from bisenet_pl.data.cityscapes import (
    IMAGE_SUFFIX,
    LABEL_IDS_SUFFIX,
    NAME_TO_LABEL,
    SYNTHETIC_MARKER,
)
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

# Appearance per label: (hue range, saturation range, value range) in HSV [0, 1], and a texture name.
# Hue ranges are class-typical and mostly disjoint; saturation/value separate classes that share a hue
# (road vs motorcycle, sidewalk vs bicycle), so colour alone is informative but not sufficient.
_Range = tuple[float, float]
_LOOKS: dict[str, tuple[_Range, _Range, _Range, str]] = {
    "road": ((0.72, 0.82), (0.05, 0.18), (0.28, 0.45), "road"),
    "sidewalk": ((0.85, 0.97), (0.10, 0.28), (0.55, 0.75), "tiles"),
    "building": ((0.02, 0.12), (0.04, 0.38), (0.35, 0.68), "facade"),
    "wall": ((0.56, 0.68), (0.10, 0.25), (0.42, 0.62), "blocks"),
    "fence": ((0.03, 0.10), (0.20, 0.38), (0.55, 0.78), "slats"),
    "pole": ((0.00, 1.00), (0.00, 0.06), (0.50, 0.75), "cylinder"),
    "traffic light": ((0.55, 0.65), (0.05, 0.20), (0.08, 0.18), "lamps"),
    "traffic sign": ((0.12, 0.17), (0.75, 1.00), (0.82, 1.00), "plate"),
    "vegetation": ((0.22, 0.33), (0.45, 0.80), (0.22, 0.50), "leaves"),
    "terrain": ((0.15, 0.24), (0.25, 0.50), (0.55, 0.80), "grass"),
    "sky": ((0.55, 0.60), (0.20, 0.55), (0.78, 0.97), "sky"),
    "person": ((0.94, 1.00), (0.55, 0.85), (0.45, 0.80), "human"),
    "rider": ((0.05, 0.09), (0.80, 1.00), (0.85, 1.00), "human"),
    "car": ((0.60, 0.67), (0.55, 0.90), (0.35, 0.75), "vehicle"),
    "truck": ((0.62, 0.68), (0.60, 0.90), (0.15, 0.30), "vehicle"),
    "bus": ((0.50, 0.55), (0.60, 0.90), (0.45, 0.70), "vehicle"),
    "train": ((0.44, 0.50), (0.50, 0.80), (0.45, 0.70), "vehicle"),
    "motorcycle": ((0.72, 0.78), (0.70, 1.00), (0.60, 0.90), "wheels"),
    "bicycle": ((0.90, 0.95), (0.70, 0.90), (0.35, 0.55), "wheels"),
    # labels that map to 255 (ignored in training and evaluation)
    "ego vehicle": ((0.55, 0.65), (0.10, 0.30), (0.10, 0.25), "flat"),
    "rectification border": ((0.0, 0.0), (0.0, 0.0), (0.0, 0.03), "flat"),
    "static": ((0.06, 0.10), (0.20, 0.40), (0.30, 0.50), "flat"),
    "dynamic": ((0.08, 0.12), (0.50, 0.70), (0.35, 0.50), "flat"),
    "ground": ((0.78, 0.85), (0.10, 0.25), (0.30, 0.45), "grass"),
    "parking": ((0.00, 0.05), (0.08, 0.18), (0.55, 0.70), "road"),
    "rail track": ((0.06, 0.10), (0.20, 0.35), (0.30, 0.45), "rails"),
    "guard rail": ((0.70, 0.80), (0.03, 0.10), (0.65, 0.85), "blocks"),
    "bridge": ((0.05, 0.10), (0.10, 0.20), (0.45, 0.60), "blocks"),
    "caravan": ((0.10, 0.14), (0.05, 0.15), (0.85, 0.95), "vehicle"),
    "trailer": ((0.00, 1.00), (0.00, 0.08), (0.40, 0.60), "vehicle"),
    "license plate": ((0.00, 1.00), (0.00, 0.03), (0.90, 1.00), "flat"),
    "trunk": ((0.05, 0.10), (0.30, 0.50), (0.18, 0.32), "trunk"),  # tree trunks: label vegetation
    "lane marking": ((0.00, 1.00), (0.00, 0.05), (0.85, 0.98), "flat"),  # painted road: label "road"
}


@dataclass
class _Object:
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

_PERSON = [
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
_RIDER = [
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
_CAR_REAR = [
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
_BOX_REAR = [
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
_CAR_SIDE = [
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
_TRUCK_SIDE = [
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
_BUS_SIDE = [
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
_TRAIN_SIDE = [(0.0, 0.1), (0.02, 0.0), (1.0, 0.0), (1.0, 0.92), (0.0, 0.92)]  # fmt: skip


def _unit_shape(template: list[tuple[float, float]], x0: float, y0: float, w: float, h: float) -> np.ndarray:
    pts = np.asarray(template, dtype=np.float64)
    return np.stack([x0 + pts[:, 0] * w, y0 + pts[:, 1] * h], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 16, jitter: np.ndarray | None = None):
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    radius = 1.0 if jitter is None else jitter
    return np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], axis=1)


def _two_wheeler(x0: float, y_ground: float, w: float, h: float, facing: int, heavy: bool) -> np.ndarray:
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


def _clip(points: np.ndarray, width: int, height: int) -> np.ndarray | None:
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


class _Street:
    """A road vanishing at (xv, yh). World X: lateral position in road half-widths; s: depth scale (1 at the
    image bottom, 0 at the horizon); a world size L at depth s spans L·s·unit pixels."""

    def __init__(self, rng: np.random.Generator, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.yh = height * rng.uniform(0.36, 0.46)
        self.xv = width * rng.uniform(0.40, 0.60)
        self.unit = width * rng.uniform(0.32, 0.42)

    def y(self, s: float) -> float:
        return self.yh + s * (self.h - self.yh)

    def x(self, lateral: float, s: float) -> float:
        return self.xv + lateral * s * self.unit

    def strip(self, a: float, b: float, s_near: float = 1.6, s_far: float = 0.0) -> np.ndarray:
        """A ground strip between laterals a and b, from depth s_near to s_far."""
        return np.array(
            [
                [self.x(a, s_near), self.y(s_near)],
                [self.x(b, s_near), self.y(s_near)],
                [self.x(b, s_far), self.y(s_far)],
                [self.x(a, s_far), self.y(s_far)],
            ]
        )

    def plane(
        self, lateral: float, s_near: float, s_far: float, top: float, bottom: float = 0.0
    ) -> np.ndarray:
        """A vertical rectangle along the street (a façade, wall, fence) between two depths."""
        return np.array(
            [
                [self.x(lateral, s_near), self.y(s_near) - bottom * s_near * self.unit],
                [self.x(lateral, s_near), self.y(s_near) - top * s_near * self.unit],
                [self.x(lateral, s_far), self.y(s_far) - top * s_far * self.unit],
                [self.x(lateral, s_far), self.y(s_far) - bottom * s_far * self.unit],
            ]
        )

    def side_shape(
        self,
        template: list[tuple[float, float]],
        lateral: float,
        s_near: float,
        length: float,
        height: float,
        facing_far: bool,
    ) -> np.ndarray:
        """A side-view outline laid along the street: u runs along depth (world length), v down."""
        pts = np.asarray(template, dtype=np.float64)
        u = pts[:, 0] if facing_far else 1.0 - pts[:, 0]
        z = 1.0 / s_near + u * length  # depth is 1/s
        s = 1.0 / z
        xs = self.xv + lateral * s * self.unit
        ys = self.y(s) - (1.0 - pts[:, 1]) * height * s * self.unit
        return np.stack([xs, ys], axis=1)

    @staticmethod
    def farther(s: float, length: float) -> float:
        return 1.0 / (1.0 / s + length)


# ---------------------------------------------------------------------------------------------------
# Scene layout
# ---------------------------------------------------------------------------------------------------


def _scene(rng: np.random.Generator, width: int, height: int) -> tuple[list[_Object], _Street]:
    """The objects of one street scene, in drawing order (later objects cover earlier ones)."""
    st = _Street(rng, width, height)
    objs: list[_Object] = []

    def add(label: str, points: np.ndarray, look: str = "", **extra: Any) -> None:
        objs.append(_Object(label, np.asarray(points, dtype=np.float64), look or label, extra=extra))

    # sky, a far skyline of buildings and trees along the horizon
    add("sky", np.array([[0, 0], [width, 0], [width, st.yh + 2], [0, st.yh + 2]]))
    x = -rng.uniform(0, 0.1) * width
    while x < width:
        w = width * rng.uniform(0.06, 0.16)
        top = st.yh - height * rng.uniform(0.04, 0.22)
        label = "vegetation" if rng.random() < 0.25 else "building"
        if label == "vegetation":
            add(label, _ellipse(x + w / 2, st.yh, w / 2, st.yh - top, 14, rng.uniform(0.8, 1.1, 14)))
        else:
            add(label, np.array([[x, st.yh + 3], [x, top], [x + w, top], [x + w, st.yh + 3]]))
        x += w * rng.uniform(0.7, 1.0)

    # ground: road, sidewalks, terrain, building line, per side
    sidewalk_w = {side: rng.uniform(0.45, 0.9) for side in (-1, 1)}
    terrain_w = {side: (rng.uniform(0.25, 0.7) if rng.random() < 0.75 else 0.0) for side in (-1, 1)}
    if terrain_w[-1] == 0 and terrain_w[1] == 0:
        terrain_w[1] = rng.uniform(0.3, 0.6)  # terrain in every scene
    line = {side: 1.0 + sidewalk_w[side] + terrain_w[side] for side in (-1, 1)}
    for side in (-1, 1):
        add(
            "terrain" if terrain_w[side] else "sidewalk",
            st.strip(side * (1.0 + sidewalk_w[side]), side * 12.0),
        )
        add("sidewalk", st.strip(side * 1.0, side * (1.0 + sidewalk_w[side])))
    add("road", st.strip(-1.0, 1.0))
    if rng.random() < 0.5:  # a parking lane along one curb
        side = rng.choice([-1, 1])
        s1 = rng.uniform(0.3, 0.9)
        add("parking", st.strip(side * 0.72, side * 1.0, s1, st.farther(s1, rng.uniform(1.0, 3.0))))
    if rng.random() < 0.3:
        s1 = rng.uniform(0.4, 1.0)
        add("ground", st.strip(-0.4, 0.4, s1, st.farther(s1, rng.uniform(0.5, 1.5))))
    rail = rng.uniform(-0.45, 0.45)
    add("rail track", st.strip(rail - 0.12, rail + 0.12), centre=rail)
    # lane markings: dashes on the centre line (painted road, label road)
    dash_z = 1.0 / 1.6 + rng.uniform(0, 1.5)
    while dash_z < 40:
        s1, s2 = 1.0 / dash_z, 1.0 / (dash_z + 1.2)
        lat = -0.5 if abs(rail + 0.5) > 0.25 else 0.5
        add("road", st.strip(lat - 0.025, lat + 0.025, s1, s2), "lane marking")
        dash_z += 3.0

    # façades along each side, far to near; some segments are walls with trees behind, some hedges
    for side in (-1, 1):
        z = 30.0
        segments = []
        while z > 0.3:
            length = rng.uniform(1.5, 4.5)
            segments.append((1.0 / z, 1.0 / max(z - length, 0.3)))
            z -= length
        for s_far, s_near in segments:
            kind = rng.random()
            if kind < 0.8:
                add(
                    "building",
                    st.plane(side * line[side], s_near, s_far, rng.uniform(1.6, 4.5)),
                    "",
                    windows=(rng.integers(2, 6), rng.uniform(0.6, 1.6)),
                )
            else:
                add("vegetation", st.plane(side * line[side], s_near, s_far, rng.uniform(1.0, 2.2)))
            if rng.random() < 0.25:
                add("wall", st.plane(side * (line[side] - 0.05), s_near, s_far, rng.uniform(0.3, 0.8)))
    s1 = rng.uniform(0.35, 0.8)  # at least one wall and one fence, at readable depths
    wall_side = rng.choice([-1, 1])
    add(
        "wall",
        st.plane(
            wall_side * (line[wall_side] - 0.05),
            s1,
            st.farther(s1, rng.uniform(1.5, 4)),
            rng.uniform(0.35, 0.8),
        ),
    )
    if rng.random() < 0.4:
        add(
            "bridge",
            np.array(
                [
                    [0, st.yh - height * 0.12],
                    [width, st.yh - height * 0.12],
                    [width, st.yh - height * 0.04],
                    [0, st.yh - height * 0.04],
                ]
            ),
        )
    for side in (-1, 1):
        if rng.random() < 0.7 or side == -wall_side:
            s1 = rng.uniform(0.3, 0.9)
            fence_lat = side * (1.0 + sidewalk_w[side] + 0.02)
            add(
                "fence",
                st.plane(fence_lat, s1, st.farther(s1, rng.uniform(1.0, 4.0)), rng.uniform(0.25, 0.45)),
                "",
                slats=rng.uniform(10, 22),
            )
        if rng.random() < 0.3:
            s1 = rng.uniform(0.4, 1.0)
            add("guard rail", st.plane(side * 1.02, s1, st.farther(s1, 2.0), 0.18, 0.08))

    # things standing on the ground, sorted far to near
    things: list[tuple[float, Callable[[], None]]] = []

    def later(s: float, fn: Callable[[], None]) -> None:
        things.append((s, fn))

    def tree(side: int, s: float) -> None:
        lat = side * (1.0 + sidewalk_w[side] * rng.uniform(0.5, 0.9))
        cx, yb, u = st.x(lat, s), st.y(s), s * st.unit
        trunk_h, crown_r = rng.uniform(0.8, 1.3), rng.uniform(0.35, 0.7)
        add(
            "vegetation",
            np.array(
                [
                    [cx - 0.04 * u, yb],
                    [cx - 0.04 * u, yb - trunk_h * u],
                    [cx + 0.04 * u, yb - trunk_h * u],
                    [cx + 0.04 * u, yb],
                ]
            ),
            "trunk",
        )
        add(
            "vegetation",
            _ellipse(
                cx,
                yb - (trunk_h + crown_r * 0.8) * u,
                crown_r * u,
                crown_r * 0.9 * u,
                18,
                rng.uniform(0.8, 1.15, 18),
            ),
        )

    def pole(side: int, s: float, with_sign: bool, with_light: bool) -> None:
        lat = side * (1.0 + rng.uniform(0.08, 0.2))
        cx, yb, u = st.x(lat, s), st.y(s), s * st.unit
        ph, pw = rng.uniform(1.1, 1.6), rng.uniform(0.035, 0.05)
        add(
            "pole",
            np.array(
                [[cx - pw * u, yb], [cx - pw * u, yb - ph * u], [cx + pw * u, yb - ph * u], [cx + pw * u, yb]]
            ),
        )
        top = yb - ph * u
        if with_light:
            bw, bh = rng.uniform(0.09, 0.12), rng.uniform(0.26, 0.32)
            bx = cx + (rng.choice([-1, 1]) * 0.12 * u if rng.random() < 0.5 else 0.0)
            add(
                "traffic light",
                np.array(
                    [
                        [bx - bw * u, top],
                        [bx + bw * u, top],
                        [bx + bw * u, top + bh * u],
                        [bx - bw * u, top + bh * u],
                    ]
                ),
                "",
                lit=rng.integers(3),
            )
            top += (bh + 0.04) * u
        if with_sign:
            r = rng.uniform(0.1, 0.15) * u
            cy = top + (1.2 * r if with_light else r * 0.3)
            shape = rng.integers(3)
            if shape == 0:
                pts = _ellipse(cx, cy, r, r, 16)
            elif shape == 1:
                pts = np.array([[cx, cy - r], [cx + r, cy + 0.8 * r], [cx - r, cy + 0.8 * r]])
            else:
                pts = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
            add("traffic sign", pts)

    def person(s: float) -> None:
        side = rng.choice([-1, 1])
        lat = side * (1.0 + sidewalk_w[side] * rng.uniform(0.15, 0.85))
        if rng.random() < 0.2:  # crossing the road
            lat = rng.uniform(-0.9, 0.9)
        u, ph = s * st.unit, rng.uniform(0.42, 0.55)
        pw = ph * rng.uniform(0.32, 0.42)
        add("person", _unit_shape(_PERSON, st.x(lat, s) - pw * u / 2, st.y(s) - ph * u, pw * u, ph * u))

    def two_wheeler(s: float, kind: str, ridden: bool) -> None:
        lat = rng.uniform(0.55, 0.9) * rng.choice([-1, 1]) if ridden else rng.choice([-1, 1]) * 1.1
        u = s * st.unit
        bw = (0.5 if kind == "bicycle" else 0.62) * rng.uniform(0.9, 1.1)
        bh = (0.3 if kind == "bicycle" else 0.34) * rng.uniform(0.9, 1.1)
        x0, yb, facing = st.x(lat, s) - bw * u / 2, st.y(s), int(rng.choice([-1, 1]))
        add(kind, _two_wheeler(x0, yb, bw * u, bh * u, facing, kind == "motorcycle"))
        if ridden:
            rh, rw = rng.uniform(0.38, 0.46), bw * 0.55
            rx = x0 + bw * u * 0.5 - rw * u * 0.5
            shape = _unit_shape(_RIDER, rx, yb - (bh * 0.55 + rh) * u, rw * u, rh * u)
            if facing < 0:
                shape[:, 0] = 2 * rx + rw * u - shape[:, 0]
            add("rider", shape)

    def vehicle_rear(s: float, kind: str) -> None:
        lat = rng.uniform(-0.6, 0.6)
        u = s * st.unit
        w, h = {
            "car": (0.5, 0.42),
            "truck": (0.62, 0.95),
            "bus": (0.66, 0.95),
            "caravan": (0.6, 0.8),
            "trailer": (0.6, 0.7),
        }[kind]
        w, h = w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1)
        x0, y0 = st.x(lat, s) - w * u / 2, st.y(s) - h * u
        add(kind, _unit_shape(_CAR_REAR if kind == "car" else _BOX_REAR, x0, y0, w * u, h * u))
        if kind == "car" and s > 0.35:
            pw, ph = 0.14 * w * u, 0.06 * h * u
            cx, cy = x0 + w * u / 2, y0 + 0.62 * h * u
            add(
                "license plate",
                np.array([[cx - pw, cy - ph], [cx + pw, cy - ph], [cx + pw, cy + ph], [cx - pw, cy + ph]]),
            )

    def vehicle_side(s: float, kind: str) -> None:
        side = rng.choice([-1, 1])
        lat = side * rng.uniform(0.75, 0.9) if kind != "train" else rail
        template, length, height_ = {
            "car": (_CAR_SIDE, 1.3, 0.42),
            "truck": (_TRUCK_SIDE, 2.5, 0.95),
            "bus": (_BUS_SIDE, 3.4, 0.95),
            "train": (_TRAIN_SIDE, rng.uniform(5.0, 9.0), 1.0),
            "caravan": (_BUS_SIDE, 1.8, 0.75),
            "trailer": (_BUS_SIDE, 1.5, 0.6),
        }[kind]
        add(kind, st.side_shape(template, lat, s, length, height_, bool(rng.random() < 0.5)))

    for side in (-1, 1):
        for _ in range(rng.integers(2, 5)):
            s = rng.uniform(0.15, 0.95)
            later(s, lambda side=side, s=s: tree(side, s))
    n_poles = int(rng.integers(3, 7))
    roles = [(True, False), (False, True)] + [
        (bool(rng.random() < 0.5), bool(rng.random() < 0.3)) for _ in range(n_poles - 2)
    ]
    for with_sign, with_light in roles:
        s = rng.uniform(0.3, 1.0)
        later(s, lambda s=s, a=with_sign, b=with_light: pole(int(rng.choice([-1, 1])), s, a, b))
    for _ in range(rng.integers(2, 6)):
        s = rng.uniform(0.3, 1.0)
        later(s, lambda s=s: person(s))
    riders = ["bicycle"] + ["motorcycle"] + (["bicycle"] if rng.random() < 0.4 else [])
    for kind in riders:
        s = rng.uniform(0.4, 1.0)
        later(s, lambda s=s, k=kind: two_wheeler(s, k, True))
    for kind in ("bicycle", "motorcycle"):
        if rng.random() < 0.5:
            s = rng.uniform(0.4, 1.0)
            later(s, lambda s=s, k=kind: two_wheeler(s, k, False))
    vehicles = ["car", "car", "truck", "bus"] + (["car"] * int(rng.integers(0, 3)))
    vehicles += [k for k, p in (("caravan", 0.15), ("trailer", 0.15)) if rng.random() < p]
    for kind in vehicles:
        s = rng.uniform(0.3, 0.95)
        if rng.random() < 0.5:
            later(s, lambda s=s, k=kind: vehicle_rear(s, k))
        else:
            later(s, lambda s=s, k=kind: vehicle_side(s, k))
    s_train = rng.uniform(0.25, 0.8)
    later(s_train, lambda: vehicle_side(s_train, "train"))
    for _ in range(rng.integers(0, 3)):
        s = rng.uniform(0.3, 1.0)
        side = rng.choice([-1, 1])

        def box(s: float = s, side: int = side, label: str = str(rng.choice(["static", "dynamic"]))) -> None:
            u, lat = s * st.unit, side * (1.0 + sidewalk_w[side] * 0.5)
            bw, bh = rng.uniform(0.12, 0.25), rng.uniform(0.15, 0.35)
            cx, yb = st.x(lat, s), st.y(s)
            add(
                label,
                np.array(
                    [
                        [cx - bw * u, yb],
                        [cx - bw * u, yb - bh * u],
                        [cx + bw * u, yb - bh * u],
                        [cx + bw * u, yb],
                    ]
                ),
            )

        later(s, box)

    things.sort(key=lambda item: item[0])  # stable: far to near
    for _, draw in things:
        draw()

    # the ego vehicle's bonnet and the rectification border, as in real frames
    if rng.random() < 0.7:
        top = height * rng.uniform(0.9, 0.95)
        xs = np.linspace(-0.05 * width, 1.05 * width, 12)
        ys = top + (height - top) * 0.6 * ((xs - width / 2) / (0.6 * width)) ** 2
        add(
            "ego vehicle",
            np.concatenate([np.stack([xs, ys], 1), [[1.05 * width, height], [-0.05 * width, height]]]),
        )
    if rng.random() < 0.3:
        c = height * rng.uniform(0.03, 0.06)
        add("rectification border", np.array([[0, height - 1 - c * 3], [c * 2, height - 1], [0, height - 1]]))
        add(
            "rectification border",
            np.array(
                [[width - 1, height - 1 - c * 3], [width - 1, height - 1], [width - 1 - c * 2, height - 1]]
            ),
        )
    return objs, st


# ---------------------------------------------------------------------------------------------------
# Painting
# ---------------------------------------------------------------------------------------------------


def _noise_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Smooth noise with `cells` features across the image height (bicubic upsampling of a coarse grid)."""
    grid = rng.standard_normal((cells + 3, 2 * cells + 3)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _base_color(rng: np.random.Generator, look: str) -> tuple[float, float, float]:
    (h0, h1), (s0, s1), (v0, v1), _ = _LOOKS[look]
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(h0, h1) % 1.0, rng.uniform(s0, s1), rng.uniform(v0, v1))
    return 255.0 * r, 255.0 * g, 255.0 * b


def _paint(
    obj: _Object, ys: np.ndarray, xs: np.ndarray, fields: dict[str, np.ndarray], st: _Street
) -> np.ndarray:
    """Colours (n, 3) RGB float for the pixels (ys, xs) that object `obj` shows."""
    base = np.asarray(obj.color, dtype=np.float32)
    x0, y0, x1, y1 = obj.bbox
    u = (xs - x0) / max(x1 - x0, 1e-3)
    v = (ys - y0) / max(y1 - y0, 1e-3)
    fine, mid, coarse = fields["fine"][ys, xs], fields["mid"][ys, xs], fields["coarse"][ys, xs]
    texture = _LOOKS[obj.look][3]
    shade = 1.0 + 0.04 * fine
    tint = None  # optional second colour (n, 3) blended with weight `mix`
    mix = np.zeros_like(u)
    if texture == "road":
        shade = 1.0 + 0.10 * fine + 0.06 * mid
    elif texture == "tiles":
        s = np.maximum((ys - st.yh) / (st.h - st.yh), 1e-3)
        wx, wz = (xs - st.xv) / (s * st.unit), 1.0 / s
        grout = (np.abs(((wx * 4) % 1.0) - 0.5) > 0.44) | (np.abs(((wz * 2) % 1.0) - 0.5) > 0.44)
        shade = 1.0 + 0.05 * fine + 0.04 * mid - 0.25 * grout
    elif texture == "facade":
        cols, rows_per_unit = obj.extra.get("windows", (3, 1.0))
        rows = max(2.0, rows_per_unit * 6)
        win = (
            (np.abs((u * cols * 2 % 1.0) - 0.5) < 0.28) & (np.abs((v * rows % 1.0) - 0.55) < 0.25) & (v < 0.9)
        )
        shade = 1.0 + 0.05 * fine + 0.08 * coarse
        tint = np.array([40.0, 50.0, 70.0], dtype=np.float32) * (1.0 + 0.3 * mid[:, None])
        mix = win.astype(np.float32) * 0.85
    elif texture == "blocks":
        seam = np.abs((v * 5 % 1.0) - 0.5) > 0.42
        shade = 1.0 + 0.06 * fine + 0.05 * mid - 0.2 * seam
    elif texture == "slats":
        gap = (u * obj.extra.get("slats", 14) % 1.0) > 0.6
        shade = 1.0 + 0.05 * fine - 0.45 * gap
    elif texture == "cylinder":
        shade = 0.65 + 0.5 * np.sin(np.pi * np.clip(u, 0, 1)) + 0.03 * fine
    elif texture == "lamps":
        centres = np.array([1 / 6, 1 / 2, 5 / 6])
        d = np.min(np.abs(v[:, None] - centres[None, :]) * 3.0, axis=1) ** 2 + (u - 0.5) ** 2
        lamp = d < 0.09
        lit = int(obj.extra.get("lit", 0))
        which = np.argmin(np.abs(v[:, None] - centres[None, :]), axis=1)
        colours = np.array([[255, 40, 30], [255, 190, 40], [60, 255, 120]], dtype=np.float32)
        tint = np.where((which == lit)[:, None], colours[lit][None, :], colours[lit][None, :] * 0.25)
        mix = lamp.astype(np.float32)
    elif texture == "plate":
        d = np.maximum(np.abs(u - 0.5), np.abs(v - 0.5)) * 2
        border = d > 0.78
        tint = np.broadcast_to(np.array([200.0, 30.0, 30.0], dtype=np.float32), (u.size, 3))
        mix = border.astype(np.float32) * 0.8
        shade = 1.0 + 0.03 * fine
    elif texture == "leaves":
        shade = 1.0 + 0.22 * fine + 0.25 * mid + 0.1 * coarse
    elif texture == "grass":
        shade = 1.0 + 0.12 * fine + 0.12 * coarse + 0.05 * mid
    elif texture == "sky":
        height_frac = np.clip(ys / max(st.yh, 1.0), 0, 1)
        shade = 0.9 + 0.15 * height_frac + 0.02 * fine
        cloud = np.clip(coarse * 0.8 + mid * 0.4 - 0.6, 0, 1)
        tint = np.broadcast_to(np.array([240.0, 242.0, 245.0], dtype=np.float32), (u.size, 3))
        mix = cloud * obj.extra.get("clouds", 0.8)
    elif texture == "human":
        head = v < 0.16
        legs = v > 0.58
        skin = np.array([225.0, 180.0, 150.0], dtype=np.float32) * obj.extra.get("skin", 1.0)
        trousers = np.array([50.0, 50.0, 60.0], dtype=np.float32) * obj.extra.get("trousers", 1.0)
        tint = np.where(head[:, None], skin[None, :], trousers[None, :])
        mix = (head | legs).astype(np.float32) * 0.9
        shade = 1.0 + 0.08 * fine + 0.05 * mid
    elif texture == "vehicle":
        glass = (v < 0.42) & (v > 0.06) & (np.abs(u - 0.5) < 0.42)
        if obj.label in ("bus", "train", "caravan"):
            glass = (v > 0.15) & (v < 0.45) & (np.abs((u * 8) % 1.0 - 0.5) < 0.4)
        tyre = v > 0.88
        tint = np.where(tyre[:, None], np.float32(25.0), np.float32(45.0)) * np.ones((1, 3), np.float32)
        tint = tint + np.array([0.0, 5.0, 15.0], dtype=np.float32) * glass[:, None]
        mix = (glass | tyre).astype(np.float32) * 0.9
        shade = 1.0 + 0.04 * fine + 0.15 * (0.5 - v) * (v < 0.88)
    elif texture == "wheels":
        shade = 1.0 + 0.06 * fine
        tint = np.broadcast_to(np.array([30.0, 30.0, 35.0], dtype=np.float32), (u.size, 3))
        mix = ((v > 0.55) & ((u < 0.3) | (u > 0.7))).astype(np.float32) * 0.7
    elif texture == "rails":
        s = np.maximum((ys - st.yh) / (st.h - st.yh), 1e-3)
        wx = (xs - st.xv) / (s * st.unit)
        steel = np.abs(np.abs(wx - obj.extra.get("centre", 0.0)) - 0.07) < 0.012
        shade = 1.0 + 0.1 * fine + 0.6 * steel
    elif texture == "trunk":
        shade = 1.0 + 0.1 * fine
    colour = base[None, :] * np.asarray(shade, dtype=np.float32).reshape(-1, 1)
    if tint is not None:
        m = np.asarray(mix, dtype=np.float32).reshape(-1, 1)
        colour = colour * (1.0 - m) + np.asarray(tint, dtype=np.float32) * m
    return colour


def _render(objs: list[_Object], st: _Street, rng: np.random.Generator) -> dict[str, Any]:
    """Rasterise the polygons (label ids, instance ids, colour) and paint the photo from them."""
    width, height = st.w, st.h
    kept: list[tuple[_Object, np.ndarray]] = []
    for obj in objs:
        pts = _clip(obj.points, width, height)
        if pts is None:
            continue
        x0, y0 = obj.points.min(axis=0)
        x1, y1 = obj.points.max(axis=0)
        obj.bbox = (float(x0), float(y0), float(x1), float(y1))
        obj.color = _base_color(rng, obj.look)
        if obj.look in ("human",):
            obj.extra.update(skin=rng.uniform(0.6, 1.05), trousers=rng.uniform(0.6, 1.6))
        if obj.look == "sky":
            obj.extra.update(clouds=rng.uniform(0.2, 1.0))
        kept.append((obj, pts))

    size = (width, height)
    label_img = Image.new("L", size, NAME_TO_LABEL["unlabeled"].id)
    inst_img = Image.new("I", size, NAME_TO_LABEL["unlabeled"].id)
    color_img = Image.new("RGBA", size, (*NAME_TO_LABEL["unlabeled"].color, 255))
    index_img = Image.new("I", size, 0)
    draws = [ImageDraw.Draw(im) for im in (label_img, inst_img, color_img, index_img)]
    instances: dict[str, int] = {}
    json_objects = []
    for k, (obj, pts) in enumerate(kept):
        polygon = [(int(x), int(y)) for x, y in pts]
        json_objects.append({"label": obj.label, "polygon": [list(p) for p in polygon]})
        draws[3].polygon(polygon, fill=k + 1)  # the painter sees everything, license plates included
        label = NAME_TO_LABEL[obj.label]
        if label.id < 0:  # Cityscapes never draws license plates into the label maps (SPEC §7.1)
            continue
        instance_id = label.id
        if label.has_instances:
            instance_id = label.id * 1000 + instances.get(obj.label, 0)
            instances[obj.label] = instances.get(obj.label, 0) + 1
        draws[0].polygon(polygon, fill=label.id)
        draws[1].polygon(polygon, fill=instance_id)
        draws[2].polygon(polygon, fill=(*label.color, 255))

    index = np.asarray(index_img, dtype=np.int64).ravel()
    fields = {
        "fine": rng.standard_normal((height, width)).astype(np.float32),
        "mid": _noise_field(rng, height, width, 48),
        "coarse": _noise_field(rng, height, width, 8),
    }
    photo = np.zeros((height * width, 3), dtype=np.float32)
    order = np.argsort(index, kind="stable")
    bounds = np.cumsum(np.bincount(index, minlength=len(kept) + 1))
    start = 0
    for k, stop in enumerate(bounds):
        pix = order[start:stop]
        start = stop
        if pix.size == 0:
            continue
        ys, xs = pix // width, pix % width
        if k == 0:
            photo[pix] = 40.0 + 10.0 * fields["fine"][ys, xs, None]
        else:
            photo[pix] = _paint(kept[k - 1][0], ys, xs, fields, st)
    photo = photo.reshape(height, width, 3)

    # light: overall exposure, a sideways gradient, soft cast shadows on the ground; then sensor noise
    light = rng.uniform(0.75, 1.2) * (1.0 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, width))[None, :]
    light = np.broadcast_to(light, (height, width)).astype(np.float32).copy()
    shadow = np.zeros((height, width), dtype=np.uint8)
    for _ in range(rng.integers(0, 3)):
        s1 = rng.uniform(0.2, 1.0)
        lat = rng.uniform(-3, 1)
        quad = st.strip(lat, lat + rng.uniform(0.8, 3), 1.6, _Street.farther(s1, rng.uniform(0.5, 2)))
        cv2.fillPoly(shadow, [np.rint(quad).astype(np.int32)], 1)
    shadow = cv2.GaussianBlur(shadow.astype(np.float32), (0, 0), max(1.0, height / 200))
    light *= 1.0 - rng.uniform(0.25, 0.45) * shadow
    photo *= light[..., None]
    photo += rng.uniform(2.0, 6.0) * rng.standard_normal(photo.shape).astype(np.float32)
    photo = cv2.GaussianBlur(photo, (0, 0), 0.6 * max(1.0, height / 512))  # lens softness
    rgb = np.clip(np.rint(photo), 0, 255).astype(np.uint8)

    return {
        "image": rgb,
        "label_ids": np.asarray(label_img, dtype=np.uint8),
        "instance_ids": np.asarray(inst_img, dtype=np.int64).astype(np.uint16),
        "color": np.asarray(color_img, dtype=np.uint8),
        "polygons": {"imgHeight": height, "imgWidth": width, "objects": json_objects},
    }


def render_scene(seed: int | list[int], height: int = 256, width: int = 512) -> dict[str, Any]:
    """One synthetic frame: `image` (RGB uint8), `label_ids`, `instance_ids` (uint16), `color` (RGBA) and
    `polygons` (Cityscapes json dict). Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    objs, street = _scene(rng, width, height)
    return _render(objs, street, rng)


# ---------------------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------------------


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

    Layout and names as Cityscapes (SPEC §7.1):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bisenet_pl.data.synthetic",
        description="Write a synthetic street-scene dataset in Cityscapes' layout (leftImg8bit/, gtFine/).",
    )
    parser.add_argument("root", type=Path, help="output folder (must not hold a dataset yet)")
    parser.add_argument("--train", type=int, default=DEFAULTS["n_train"], help="train images (default 40)")
    parser.add_argument("--val", type=int, default=DEFAULTS["n_val"], help="val images (default 10)")
    parser.add_argument("--test", type=int, default=DEFAULTS["n_test"], help="test images (default 5)")
    parser.add_argument(
        "--height", type=int, default=DEFAULTS["height"], help="default 256 (Cityscapes: 1024)"
    )
    parser.add_argument("--width", type=int, default=DEFAULTS["width"], help="default 512 (real: 2048)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = parser.parse_args(argv)
    if (args.root / "leftImg8bit").exists():
        print(
            f"error: {args.root} already holds a dataset (leftImg8bit/); choose another folder or delete it"
        )
        return 1
    try:
        make_synthetic_cityscapes(
            args.root, args.train, args.val, args.test, args.height, args.width, args.seed
        )
    except DatasetError as err:
        print(f"error: {err}")
        return 1
    print(
        f"Wrote a synthetic Cityscapes-layout dataset to {args.root} (train {args.train}, val {args.val}, "
        f"test {args.test}; {args.height}x{args.width})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
