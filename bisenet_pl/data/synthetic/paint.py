"""Painting a scene: class-typical colours and textures, light and noise, rasterised from the same
polygons as the labels (as cityscapesscripts' `json2labelImg` draws them), so photo and labels agree."""

from __future__ import annotations

import colorsys
import logging
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from bisenet_pl.data.cityscapes import (
    NAME_TO_LABEL,
)
from bisenet_pl.data.synthetic.scene import Street, layout_scene
from bisenet_pl.data.synthetic.shapes import SceneObject, clip_to_frame

log = logging.getLogger(__name__)


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


def _noise_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Smooth noise with `cells` features across the image height (bicubic upsampling of a coarse grid)."""
    grid = rng.standard_normal((cells + 3, 2 * cells + 3)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _base_color(rng: np.random.Generator, look: str) -> tuple[float, float, float]:
    (h0, h1), (s0, s1), (v0, v1), _ = _LOOKS[look]
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(h0, h1) % 1.0, rng.uniform(s0, s1), rng.uniform(v0, v1))
    return 255.0 * r, 255.0 * g, 255.0 * b


def _paint(
    obj: SceneObject, ys: np.ndarray, xs: np.ndarray, fields: dict[str, np.ndarray], st: Street
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
    mix: np.ndarray = np.zeros_like(u)
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


def _render(objs: list[SceneObject], st: Street, rng: np.random.Generator) -> dict[str, Any]:
    """Rasterise the polygons (label ids, instance ids, colour) and paint the photo from them."""
    width, height = st.w, st.h
    kept: list[tuple[SceneObject, np.ndarray]] = []
    for obj in objs:
        pts = clip_to_frame(obj.points, width, height)
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
        if (
            label.id < 0
        ):  # Cityscapes never draws license plates into the label maps (docs/reproduction.md#data)
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
    photo: np.ndarray = np.zeros((height * width, 3), dtype=np.float32)
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
    light: np.ndarray = (
        rng.uniform(0.75, 1.2) * (1.0 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, width))[None, :]
    )
    light = np.broadcast_to(light, (height, width)).astype(np.float32).copy()
    shadow: np.ndarray = np.zeros((height, width), dtype=np.uint8)
    for _ in range(rng.integers(0, 3)):
        s1 = rng.uniform(0.2, 1.0)
        lat = rng.uniform(-3, 1)
        quad = st.strip(lat, lat + rng.uniform(0.8, 3), 1.6, Street.farther(s1, rng.uniform(0.5, 2)))
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
    objs, street = layout_scene(rng, width, height)
    return _render(objs, street, rng)
