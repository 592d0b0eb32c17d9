"""Small datasets stored exactly as annotation tools and public sets store them, for tests and trials.

Each image is a textured background with a few large shapes, one colour family per class, so a short CPU
run learns it reliably; what matters here is the storage, written the way each source writes it:

- `cvat`: CVAT's "Segmentation mask 1.1" export: `labelmap.txt` (`name:r,g,b::`), `JPEGImages/`,
  RGB colour masks in `SegmentationClass/`, `ImageSets/Segmentation/{train,val}.txt` (stems);
- `voc`: Pascal VOC 2012: `JPEGImages/`, palette PNGs in `SegmentationClass/` (VOC's colour map, 21
  classes, a 255 border around each object), `ImageSets/Segmentation/{train,val}.txt`;
- `colour`: a generic folder (`images/<split>/`, `masks/<split>/`) of RGB colour masks with a
  `classes.yaml` giving each class its colour;
- `flat`: `images/` and `masks/` without split sub-folders (grey class-index masks, `classes.yaml`);
- `binary`: `images/<split>/` with 0/255 masks and `classes.yaml` mapping 255 to the foreground.

    python -m bisenet_pl.data.synthetic data/cvat_demo --export cvat --train 24 --val 8
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image

from bisenet_pl.data.presets import voc_palette

#: The classes drawn (`objects` picks how many of the four object classes) and the VOC index each is
#: stored under in the `voc` layout.
SHAPE_CLASSES = ("background", "car", "dog", "person", "boat")
_VOC_INDEX = {"background": 0, "car": 7, "person": 15, "dog": 12, "boat": 4}
#: Paint colours (RGB) per class: a grey background and four hues a quarter turn apart, so that mmseg's
#: photometric distortion (hue +-18 of OpenCV's 180) never moves one class onto another.
_PAINT = {
    "background": (110, 110, 100),
    "car": (230, 40, 40),
    "dog": (40, 220, 220),
    "person": (135, 230, 40),
    "boat": (140, 40, 230),
}
#: The colour each class has in a colour-mask export (CVAT's label colours, `classes.yaml` palettes).
MASK_COLOURS = {
    "background": (0, 0, 0),
    "car": (250, 50, 83),
    "person": (61, 245, 61),
    "dog": (51, 221, 255),
    "boat": (255, 204, 51),
}


def shape_scene(
    seed: int | list[int], height: int, width: int, classes: tuple[str, ...] = SHAPE_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image, uint8 class-index map over `classes`) of one scene, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        cls = int(rng.integers(1, len(classes)))
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        ry = int(rng.integers(height // 6, height // 3 + 1))
        rx = int(rng.integers(height // 6, height // 2 + 1))
        if rng.random() < 0.5:
            cv2.ellipse(label, (cx, cy), (rx, ry), float(rng.uniform(0, 180)), 0, 360, cls, -1)
        else:
            cv2.rectangle(label, (cx - rx, cy - ry), (cx + rx, cy + ry), cls, -1)
    paint = np.array([_PAINT[c] for c in classes], np.float32)
    image = paint[label] + rng.uniform(-25, 25, size=(1, 1, 3)).astype(np.float32)
    texture = cv2.GaussianBlur(rng.normal(0, 18, size=(height, width, 3)).astype(np.float32), (0, 0), 1.5)
    image = np.clip(image + texture + rng.normal(0, 6, size=image.shape), 0, 255).astype(np.uint8)
    return image, label


def _border(label: np.ndarray, width: int = 2) -> np.ndarray:
    """VOC's void border: the pixels within `width` of a class boundary."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return cv2.dilate(label, kernel) != cv2.erode(label, kernel)


def make_export(
    layout: str,
    root: str | Path,
    n_train: int = 24,
    n_val: int = 8,
    height: int = 64,
    width: int = 96,
    seed: int = 0,
    objects: int = 2,
) -> Path:
    """Write `n_train` + `n_val` shape scenes in `layout` under `root`, with background and `objects`
    (1-4) object classes (`binary`: 1); returns `root`."""
    root = Path(root)
    names = SHAPE_CLASSES[: 2 if layout == "binary" else 1 + max(1, min(int(objects), 4))]
    stems: dict[str, list[str]] = {}
    for split, count in (("train", n_train), ("val", n_val)):
        stems[split] = []
        for i in range(count):
            image, label = shape_scene([seed, 0 if split == "train" else 1, i], height, width, names)
            stem = f"{split}_{i:04d}"
            stems[split].append(stem)
            _write(layout, root, split, stem, image, label, names)
    if layout in ("cvat", "voc"):
        lists = root / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        for split, items in stems.items():
            (lists / f"{split}.txt").write_text("".join(f"{s}\n" for s in items))
    if layout == "cvat":
        lines = ["# label:color_rgb:parts:actions"]
        lines += [f"{n}:{','.join(str(v) for v in MASK_COLOURS[n])}::" for n in names]
        (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    elif layout == "colour":
        table = {"classes": list(names), "palette": [list(MASK_COLOURS[n]) for n in names]}
        (root / "classes.yaml").write_text(yaml.safe_dump(table, sort_keys=False))
    elif layout in ("flat", "binary"):
        table = {"classes": list(names)} | ({"label_map": {0: 0, 255: 1}} if layout == "binary" else {})
        (root / "classes.yaml").write_text(yaml.safe_dump(table, sort_keys=False))
    return root


def _write(
    layout: str, root: Path, split: str, stem: str, image: np.ndarray, label: np.ndarray, names: tuple
) -> None:
    if layout in ("cvat", "voc"):
        image_path = root / "JPEGImages" / f"{stem}.jpg"
        mask_path = root / "SegmentationClass" / f"{stem}.png"
    elif layout == "flat":
        image_path, mask_path = root / "images" / f"{stem}.jpg", root / "masks" / f"{stem}.png"
    else:
        image_path = root / "images" / split / f"{stem}.jpg"
        mask_path = root / "masks" / split / f"{stem}.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path, quality=92)
    if layout in ("cvat", "colour"):
        colours = np.array([MASK_COLOURS[n] for n in names], np.uint8)
        Image.fromarray(colours[label]).save(mask_path)
    elif layout == "voc":
        stored = np.array([_VOC_INDEX[n] for n in names], np.uint8)[label]
        stored[_border(label)] = 255
        pil = Image.fromarray(stored, mode="P")
        pil.putpalette([v for c in voc_palette(256) for v in c])
        pil.save(mask_path)
    elif layout == "binary":
        Image.fromarray((label > 0).astype(np.uint8) * 255).save(mask_path)
    else:
        Image.fromarray(label).save(mask_path)


LAYOUTS = ("cvat", "voc", "colour", "flat", "binary")
