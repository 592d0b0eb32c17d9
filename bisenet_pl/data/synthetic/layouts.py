"""The synthetic street scenes written in other datasets' layouts and label conventions.

Tests (and users trying `data=folder`) need small datasets stored exactly as real ones are: a binary set
of 0/255 masks, a few-class set with an ignore value, ADE20K's `reduce_zero_label` convention, CamVid as
the SegNet tutorial ships it. Each is the same rendered scene with its Cityscapes classes merged into the
layout's classes, so a short run can learn it.

    python -m bisenet_pl.data.synthetic data/binary --layout binary --train 16 --val 4
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from bisenet_pl.data.cityscapes import LABEL_ID_TO_TRAIN_ID, NAME_TO_LABEL
from bisenet_pl.data.synthetic.paint import render_scene


@dataclass(frozen=True)
class Layout:
    """Where files go and how a Cityscapes class is stored in this layout's masks."""

    classes: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]  # layout class -> Cityscapes classes; others are `unlisted`
    stored: dict[str, int]  # layout class -> the value written into the mask ("void": the ignore value)
    unlisted: str  # the layout class (or "void") of every Cityscapes class not in `groups`
    image_dir: str
    mask_dir: str
    image_ext: str
    splits: dict[str, str]  # our split -> the folder name the layout uses
    class_file: dict[str, object] | None  # what goes into classes.yaml (None: no file)


LAYOUTS: dict[str, Layout] = {
    # Binary masks as most tools save them: background 0, foreground 255 (a label_map is needed).
    "binary": Layout(
        classes=("background", "road"),
        groups={"road": ("road",)},
        stored={"background": 0, "road": 255},
        unlisted="background",
        image_dir="images/{split}",
        mask_dir="masks/{split}",
        image_ext=".jpg",
        splits={"train": "train", "val": "val"},
        class_file={"classes": ["background", "road"], "label_map": {0: 0, 255: 1}},
    ),
    # A handful of classes with an ignore value for unlabelled pixels.
    "five": Layout(
        classes=("flat", "construction", "nature", "sky", "object"),
        groups={
            "flat": ("road", "sidewalk"),
            "construction": ("building", "wall", "fence"),
            "nature": ("vegetation", "terrain"),
            "sky": ("sky",),
            "object": ("pole", "traffic light", "traffic sign", "person", "rider", "car", "truck", "bus",
                       "train", "motorcycle", "bicycle"),
        },  # fmt: skip
        stored={"flat": 0, "construction": 1, "nature": 2, "sky": 3, "object": 4, "void": 255},
        unlisted="void",
        image_dir="images/{split}",
        mask_dir="masks/{split}",
        image_ext=".png",
        splits={"train": "train", "val": "val"},
        class_file={"classes": ["flat", "construction", "nature", "sky", "object"], "ignore_index": 255},
    ),
    # ADE20K as mmseg's converter leaves it: images/{training,validation}/*.jpg, annotations/*.png with
    # 0 = "other" and classes stored from 1 (reduce_zero_label).
    "ade20k": Layout(
        classes=("road", "building", "tree", "sky", "car"),
        groups={
            "road": ("road", "sidewalk"),
            "building": ("building", "wall"),
            "tree": ("vegetation",),
            "sky": ("sky",),
            "car": ("car", "truck", "bus"),
        },
        stored={"road": 1, "building": 2, "tree": 3, "sky": 4, "car": 5, "void": 0},
        unlisted="void",
        image_dir="images/{split}",
        mask_dir="annotations/{split}",
        image_ext=".jpg",
        splits={"train": "training", "val": "validation"},
        class_file=None,
    ),
    # CamVid as the SegNet tutorial ships it: train/ trainannot/ val/ valannot/, 11 classes 0..10, void 11.
    "camvid": Layout(
        classes=("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
                 "pedestrian", "bicyclist"),
        groups={
            "sky": ("sky",), "building": ("building", "wall"), "pole": ("pole",), "road": ("road",),
            "pavement": ("sidewalk",), "tree": ("vegetation", "terrain"),
            "signsymbol": ("traffic sign", "traffic light"), "fence": ("fence",),
            "car": ("car", "truck", "bus", "train"), "pedestrian": ("person",),
            "bicyclist": ("rider", "bicycle", "motorcycle"),
        },
        stored={"sky": 0, "building": 1, "pole": 2, "road": 3, "pavement": 4, "tree": 5, "signsymbol": 6,
                "fence": 7, "car": 8, "pedestrian": 9, "bicyclist": 10, "void": 11},
        unlisted="void",
        image_dir="{split}",
        mask_dir="{split}annot",
        image_ext=".png",
        splits={"train": "train", "val": "val", "test": "test"},
        class_file=None,
    ),
}  # fmt: skip


def stored_mask(label_ids: np.ndarray, layout: Layout) -> np.ndarray:
    """The layout's mask of a Cityscapes labelIds map."""
    train_ids = LABEL_ID_TO_TRAIN_ID[label_ids]
    by_train_id = np.full(256, layout.stored.get(layout.unlisted, 0), dtype=np.uint8)
    for cls, members in layout.groups.items():
        for name in members:
            by_train_id[NAME_TO_LABEL[name].train_id] = layout.stored[cls]
    return by_train_id[train_ids]


def make_layout_dataset(
    name: str,
    root: str | Path,
    n_train: int = 16,
    n_val: int = 4,
    height: int = 128,
    width: int = 256,
    seed: int = 0,
) -> Path:
    """Write `n_train` + `n_val` scenes in layout `name` under `root`; returns `root`."""
    layout = LAYOUTS[name]
    root = Path(root)
    for split, count in (("train", n_train), ("val", n_val)):
        folder = layout.splits[split]
        for i in range(count):
            scene = render_scene([seed, 0 if split == "train" else 1, i], height=height, width=width)
            stem = f"{split}_{i:04d}"
            image_path = root / layout.image_dir.format(split=folder) / f"{stem}{layout.image_ext}"
            mask_path = root / layout.mask_dir.format(split=folder) / f"{stem}.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene["image"]).save(image_path, quality=95)
            Image.fromarray(stored_mask(scene["label_ids"], layout)).save(mask_path)
    if layout.class_file is not None:
        (root / "classes.yaml").write_text(yaml.safe_dump(layout.class_file, sort_keys=False))
    return root
