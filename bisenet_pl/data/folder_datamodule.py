"""`data=folder` (and the `camvid`, `ade20k` presets): any image/mask folder through mmseg's recipe.

Everything but the files is Cityscapes' datamodule: the same augmentation (with the dataset's sizes),
samplers, workers and seeding. Only pairing, the class table and the label decoding differ, and the
class table is the one source of the class count for the model, the loss, the metric and the
checkpoint's meta (`bisenet_pl.train` reads it from here).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from bisenet_pl.data.datamodule import CityscapesDataModule
from bisenet_pl.data.folder import ClassTable, FolderDataset, Pair, find_pairs, read_mask
from bisenet_pl.data.presets import preset as preset_fields
from bisenet_pl.errors import DatasetError

log = logging.getLogger(__name__)

_LAYOUT_KEYS = ("image_dir", "mask_dir", "mask_suffix", "list_file", "splits")
_TABLE_KEYS = ("classes", "palette", "ignore_index", "label_map", "reduce_zero_label")
_RECIPE_KEYS = ("scale", "crop_size", "test_scale", "ratio_range")


class FolderDataModule(CityscapesDataModule):
    """Images and masks in folders (or list files), paired by stem, with an explicit label encoding.

    Args:
        root: the dataset folder; `image_dir`, `mask_dir` and `list_file` are relative to it, with
            `{split}` replaced by the split's folder name from `splits` (e.g. ADE20K's `training`).
        preset: `folder`, `camvid` or `ade20k` (bisenet_pl.data.presets); explicit arguments override it.
        classes, palette, ignore_index, label_map, reduce_zero_label: the class table; unset ones come
            from `<root>/classes.yaml`, then from the preset.
        Other arguments: as `CityscapesDataModule` (batch size, workers, the augmentation's sizes).
    """

    def __init__(
        self,
        root: str | Path,
        preset: str = "folder",
        image_dir: str | None = None,
        mask_dir: str | None = None,
        mask_suffix: str | None = None,
        list_file: str | None = None,
        splits: Mapping[str, str] | None = None,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int | None = None,
        label_map: Mapping[Any, Any] | None = None,
        reduce_zero_label: bool | None = None,
        scale: Sequence[int] | None = None,
        crop_size: Sequence[int] | None = None,
        test_scale: Sequence[int] | None = None,
        ratio_range: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        fields = preset_fields(preset)
        given = {
            "image_dir": image_dir, "mask_dir": mask_dir, "mask_suffix": mask_suffix, "list_file": list_file,
            "splits": splits, "classes": classes, "palette": palette, "ignore_index": ignore_index,
            "label_map": label_map, "reduce_zero_label": reduce_zero_label, "scale": scale,
            "crop_size": crop_size, "test_scale": test_scale, "ratio_range": ratio_range,
        }  # fmt: skip
        fields.update({k: v for k, v in given.items() if v is not None})
        recipe = {k: fields[k] for k in _RECIPE_KEYS if k in fields}
        kwargs.setdefault("generate_if_missing", False)
        super().__init__(root, **recipe, **kwargs)
        self.preset = preset
        self.layout: dict[str, Any] = {k: fields.get(k) for k in _LAYOUT_KEYS}
        self.split_folders: dict[str, str] = dict(fields.get("splits") or {"train": "train", "val": "val"})
        self.table = ClassTable.resolve(
            self.root,
            classes=classes,
            palette=palette,
            ignore_index=ignore_index,
            label_map=label_map,
            reduce_zero_label=reduce_zero_label,
            defaults={k: fields[k] for k in _TABLE_KEYS if k in fields},
        )
        self.encoding = self.table.encoding

    # ---- metadata: the one source of the class count -------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.table.classes)

    @property
    def num_classes(self) -> int:
        return len(self.table.classes)

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.table.palette]

    @property
    def ignore_index(self) -> int:
        return self.encoding.ignore_index

    @property
    def has_label_ids(self) -> bool:
        return False

    # ---- files ------------------------------------------------------------------------------------------
    def pairs(self, split: str, masks_required: bool = True) -> tuple[list[Pair], list[Path]]:
        folder = self.split_folders.get(split, split)
        return find_pairs(
            self.root,
            folder,
            image_dir=self.layout["image_dir"] or "images/{split}",
            mask_dir=self.layout["mask_dir"] or "masks/{split}",
            mask_suffix=self.layout["mask_suffix"] or "",
            list_file=self.layout["list_file"],
            masks_required=masks_required,
        )

    def first_file_check(self, split: str = "train") -> None:
        """The cheap part of `python -m bisenet_pl.data.check`, run before the model is built: the split
        pairs, and its first mask decodes through the class table."""
        pairs, orphans = self.pairs(split)
        if orphans:
            log.warning(
                "%s: %d mask(s) without an image (e.g. %s); `python -m bisenet_pl.data.check %s` lists them",
                split, len(orphans), orphans[0], self.root,
            )  # fmt: skip
        first = pairs[0]
        if first.mask is not None:
            try:
                self.encoding.decode(read_mask(first.mask), first.mask)
            except DatasetError as err:
                raise DatasetError(
                    f"{err}. Check the whole set: python -m bisenet_pl.data.check {self.root}"
                ) from None
        log.info(
            "%s split %r: %d images, %d classes (%s)",
            self.preset,
            split,
            len(pairs),
            self.num_classes,
            self.root,
        )

    def make_dataset(self, split: str, transform: Any, keep_original: bool, with_labels: bool) -> Dataset:
        pairs, _ = self.pairs(split, masks_required=with_labels)
        return FolderDataset(
            pairs, self.encoding, transform, keep_original=keep_original, with_labels=with_labels
        )
