"""Public dataset layouts people train BiSeNetV2 on, as they ship or as mmseg's converters leave them.

A preset fills in what `FolderDataModule` would otherwise need spelled out: where images and masks are,
how splits are named, the label convention, and the augmentation sizes of mmseg's recipe for that
dataset. Every field can still be overridden (`data=camvid data.crop_size=[512,512]`); class names come
from a `classes.yaml` beside the data first, then from the preset.
"""

from __future__ import annotations

from typing import Any

#: ADE20K's 150 SceneParse classes in their index order (index 0 of the stored masks is "other").
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence",
    "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

#: CamVid's 11 classes as the SegNet tutorial stores them (value 11 is "void").
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car", "pedestrian",
    "bicyclist",
)  # fmt: skip

#: Pascal VOC 2012's 21 classes (0 background; 255 in the masks marks borders and "difficult" regions).
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


def voc_palette(n: int = 21) -> list[list[int]]:
    """VOC's colour map (the devkit's bit-interleaving `labelcolormap`), RGB per index."""
    colours = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append([r, g, b])
    return colours


PRESETS: dict[str, dict[str, Any]] = {
    # A generic folder: images/<split>/, masks/<split>/, classes from classes.yaml or data.classes.
    "folder": {
        "image_dir": "images/{split}",
        "mask_dir": "masks/{split}",
        "splits": {"train": "train", "val": "val", "test": "test"},
        "scale": (2048, 1024),
        "crop_size": (512, 512),
        "test_scale": (2048, 1024),
    },
    # ADE20K (ADEChallengeData2016) as released, mmseg's ade20k-512x512 recipe.
    "ade20k": {
        "image_dir": "images/{split}",
        "mask_dir": "annotations/{split}",
        "splits": {"train": "training", "val": "validation", "test": "validation"},
        "classes": ADE20K_CLASSES,
        "reduce_zero_label": True,
        "scale": (2048, 512),
        "crop_size": (512, 512),
        "test_scale": (2048, 512),
    },
    # CVAT's "Segmentation mask 1.1" export: labelmap.txt (classes and colours), JPEGImages/, RGB colour
    # masks in SegmentationClass/, split lists of stems in ImageSets/Segmentation/ (a task without subsets
    # exports default.txt only: data.splits="{train: default}" data.val_fraction=0.2).
    "cvat": {
        "image_dir": "JPEGImages",
        "mask_dir": "SegmentationClass",
        "split_list": "ImageSets/Segmentation/{split}.txt",
        "splits": {"train": "train", "val": "val", "test": "test"},
        "scale": (2048, 1024),
        "crop_size": (512, 512),
        "test_scale": (2048, 1024),
    },
    # Pascal VOC 2012 (VOCdevkit/VOC2012): palette PNGs in SegmentationClass/ (21 classes, 255 = border),
    # ImageSets/Segmentation/{train,val}.txt; mmseg's voc12 512x512 recipe.
    "voc": {
        "image_dir": "JPEGImages",
        "mask_dir": "SegmentationClass",
        "split_list": "ImageSets/Segmentation/{split}.txt",
        "splits": {"train": "train", "val": "val", "test": "val"},
        "classes": VOC_CLASSES,
        "palette": voc_palette(21),
        "ignore_index": 255,
        "scale": (2048, 512),
        "crop_size": (512, 512),
        "test_scale": (2048, 512),
    },
    # CamVid in the SegNet tutorial's layout (train/ trainannot/ ...), void (11) ignored.
    "camvid": {
        "image_dir": "{split}",
        "mask_dir": "{split}annot",
        "splits": {"train": "train", "val": "val", "test": "test"},
        "classes": CAMVID_CLASSES,
        "label_map": {11: 255},
        "scale": (960, 720),
        "crop_size": (720, 720),
        "test_scale": (960, 720),
    },
}


def preset(name: str) -> dict[str, Any]:
    from bisenet_pl.errors import DatasetError

    if name not in PRESETS:
        raise DatasetError(f"data preset {name!r}: choose one of {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name])
