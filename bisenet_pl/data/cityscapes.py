"""Cityscapes: class names, palette, label-id table and normalisation, defined once for the package."""

from __future__ import annotations

import numpy as np

# The 19 train classes in trainId order (SPEC §7.3), as mmseg's METAINFO and cityscapesscripts name them.
CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip

# Official colours (RGB) in trainId order.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

IGNORE_INDEX = 255
NUM_CLASSES = len(CLASSES)

# ImageNet statistics in RGB, 0-255 scale: mmseg's SegDataPreProcessor values.
MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

# labelId -> trainId (SPEC §7.2); every other id maps to 255.
_TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
TRAIN_ID_TO_LABEL_ID: np.ndarray = np.array(_TRAIN_LABEL_IDS, dtype=np.uint8)
LABEL_ID_TO_TRAIN_ID: np.ndarray = np.full(256, IGNORE_INDEX, dtype=np.uint8)
LABEL_ID_TO_TRAIN_ID[list(_TRAIN_LABEL_IDS)] = np.arange(NUM_CLASSES, dtype=np.uint8)
