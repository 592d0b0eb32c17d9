"""Data: the generic DataModule and its Cityscapes and folder specialisations, mmseg's augmentation
pipelines, the datasets and the synthetic set.

Names are imported lazily so that `import bisenet_pl.data.cityscapes` (constants only) does not pull in
Lightning or albumentations.
"""

from __future__ import annotations

from bisenet_pl._lazy import lazy_getattr

_LAZY = {
    "CityscapesDataset": "bisenet_pl.data.cityscapes",
    "preprocess": "bisenet_pl.data.preprocess",
    "train_ids_to_label_ids": "bisenet_pl.data.cityscapes",
    "build_train_transform": "bisenet_pl.data.transforms",
    "build_test_transform": "bisenet_pl.data.transforms",
    "SegmentationDataModule": "bisenet_pl.data.datamodule",
    "CityscapesDataModule": "bisenet_pl.data.cityscapes_datamodule",
    "FolderDataModule": "bisenet_pl.data.folder_datamodule",
    "make_synthetic_cityscapes": "bisenet_pl.data.synthetic",
    "ensure_dataset": "bisenet_pl.data.synthetic",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr("bisenet_pl.data", _LAZY)
