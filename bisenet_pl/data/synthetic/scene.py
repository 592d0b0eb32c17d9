"""The layout of one street scene: a road in perspective, sidewalks, façades, vegetation, street
furniture and traffic, as Cityscapes polygons in drawing order."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from bisenet_pl.data.synthetic.shapes import (
    BOX_REAR,
    BUS_SIDE,
    CAR_REAR,
    CAR_SIDE,
    PERSON,
    RIDER,
    TRAIN_SIDE,
    TRUCK_SIDE,
    SceneObject,
    ellipse,
    two_wheeler_outline,
    unit_shape,
)

log = logging.getLogger(__name__)

#: A depth scale: one value, or one per point.
_Depth = TypeVar("_Depth", float, np.ndarray)


class Street:
    """A road vanishing at (xv, yh). World X: lateral position in road half-widths; s: depth scale (1 at the
    image bottom, 0 at the horizon); a world size L at depth s spans L·s·unit pixels."""

    def __init__(self, rng: np.random.Generator, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.yh = height * rng.uniform(0.36, 0.46)
        self.xv = width * rng.uniform(0.40, 0.60)
        self.unit = width * rng.uniform(0.32, 0.42)

    def y(self, s: _Depth) -> _Depth:
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


def layout_scene(rng: np.random.Generator, width: int, height: int) -> tuple[list[SceneObject], Street]:
    """The objects of one street scene, in drawing order (later objects cover earlier ones)."""
    st = Street(rng, width, height)
    objs: list[SceneObject] = []

    def add(label: str, points: np.ndarray, look: str = "", **extra: Any) -> None:
        objs.append(SceneObject(label, np.asarray(points, dtype=np.float64), look or label, extra=extra))

    # sky, a far skyline of buildings and trees along the horizon
    add("sky", np.array([[0, 0], [width, 0], [width, st.yh + 2], [0, st.yh + 2]]))
    x = -rng.uniform(0, 0.1) * width
    while x < width:
        w = width * rng.uniform(0.06, 0.16)
        top = st.yh - height * rng.uniform(0.04, 0.22)
        label = "vegetation" if rng.random() < 0.25 else "building"
        if label == "vegetation":
            add(label, ellipse(x + w / 2, st.yh, w / 2, st.yh - top, 14, rng.uniform(0.8, 1.1, 14)))
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
            pick = rng.random()
            if pick < 0.8:
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
            ellipse(
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
                pts = ellipse(cx, cy, r, r, 16)
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
        add("person", unit_shape(PERSON, st.x(lat, s) - pw * u / 2, st.y(s) - ph * u, pw * u, ph * u))

    def two_wheeler(s: float, kind: str, ridden: bool) -> None:
        lat = rng.uniform(0.55, 0.9) * rng.choice([-1, 1]) if ridden else rng.choice([-1, 1]) * 1.1
        u = s * st.unit
        bw = (0.5 if kind == "bicycle" else 0.62) * rng.uniform(0.9, 1.1)
        bh = (0.3 if kind == "bicycle" else 0.34) * rng.uniform(0.9, 1.1)
        x0, yb, facing = st.x(lat, s) - bw * u / 2, st.y(s), int(rng.choice([-1, 1]))
        add(kind, two_wheeler_outline(x0, yb, bw * u, bh * u, facing, kind == "motorcycle"))
        if ridden:
            rh, rw = rng.uniform(0.38, 0.46), bw * 0.55
            rx = x0 + bw * u * 0.5 - rw * u * 0.5
            shape = unit_shape(RIDER, rx, yb - (bh * 0.55 + rh) * u, rw * u, rh * u)
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
        add(kind, unit_shape(CAR_REAR if kind == "car" else BOX_REAR, x0, y0, w * u, h * u))
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
            "car": (CAR_SIDE, 1.3, 0.42),
            "truck": (TRUCK_SIDE, 2.5, 0.95),
            "bus": (BUS_SIDE, 3.4, 0.95),
            "train": (TRAIN_SIDE, rng.uniform(5.0, 9.0), 1.0),
            "caravan": (BUS_SIDE, 1.8, 0.75),
            "trailer": (BUS_SIDE, 1.5, 0.6),
        }[kind]
        add(kind, st.side_shape(template, lat, s, length, height_, bool(rng.random() < 0.5)))

    for side in (-1, 1):
        for _ in range(rng.integers(2, 5)):
            s = rng.uniform(0.15, 0.95)
            later(s, functools.partial(tree, side, s))
    n_poles = int(rng.integers(3, 7))
    roles = [(True, False), (False, True)] + [
        (bool(rng.random() < 0.5), bool(rng.random() < 0.3)) for _ in range(n_poles - 2)
    ]
    for with_sign, with_light in roles:
        s = rng.uniform(0.3, 1.0)

        def standing_pole(s: float = s, a: bool = with_sign, b: bool = with_light) -> None:
            pole(int(rng.choice([-1, 1])), s, a, b)  # the side is drawn when the pole is

        later(s, standing_pole)
    for _ in range(rng.integers(2, 6)):
        s = rng.uniform(0.3, 1.0)
        later(s, functools.partial(person, s))
    riders = ["bicycle"] + ["motorcycle"] + (["bicycle"] if rng.random() < 0.4 else [])
    for kind in riders:
        s = rng.uniform(0.4, 1.0)
        later(s, functools.partial(two_wheeler, s, kind, True))
    for kind in ("bicycle", "motorcycle"):
        if rng.random() < 0.5:
            s = rng.uniform(0.4, 1.0)
            later(s, functools.partial(two_wheeler, s, kind, False))
    vehicles = ["car", "car", "truck", "bus"] + (["car"] * int(rng.integers(0, 3)))
    vehicles += [k for k, p in (("caravan", 0.15), ("trailer", 0.15)) if rng.random() < p]
    for kind in vehicles:
        s = rng.uniform(0.3, 0.95)
        if rng.random() < 0.5:
            later(s, functools.partial(vehicle_rear, s, kind))
        else:
            later(s, functools.partial(vehicle_side, s, kind))
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
