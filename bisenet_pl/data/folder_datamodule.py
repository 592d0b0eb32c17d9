"""`data=folder` (and the `camvid`, `ade20k` presets): any image/mask folder through mmseg's recipe.

It specialises the generic `SegmentationDataModule` (the augmentation with the dataset's sizes, samplers,
workers and seeding) with pairing, the class table and the label decoding. The
class table is the one source of the class count for the model, the loss, the metric and the
checkpoint's meta (`bisenet_pl.train` reads it from here).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from torch.utils.data import Dataset

from bisenet_pl.data.datamodule import SegmentationDataModule
from bisenet_pl.data.folder import ClassTable, FolderDataset, Pair, find_pairs, read_mask
from bisenet_pl.data.presets import preset as preset_fields
from bisenet_pl.data.strict import describe, orientation_note, strict_decode
from bisenet_pl.errors import DatasetError

log = logging.getLogger(__name__)

_LAYOUT_KEYS = ("image_dir", "mask_dir", "mask_suffix", "list_file", "split_list", "splits", "val_fraction")
#: Where a run records the split `val_fraction` drew (in the run folder, never in the data's).
SPLIT_RECORD = "data_split.yaml"
_TABLE_KEYS = ("classes", "palette", "ignore_index", "label_map", "reduce_zero_label")
_RECIPE_KEYS = ("scale", "crop_size", "test_scale", "ratio_range")


class FolderDataModule(SegmentationDataModule):
    """Images and masks in folders (or list files), paired by stem, with an explicit label encoding.

    Args:
        root: the dataset folder; `image_dir`, `mask_dir` and `list_file` are relative to it, with
            `{split}` replaced by the split's folder name from `splits` (e.g. ADE20K's `training`).
        preset: `folder`, `cvat`, `voc`, `camvid` or `ade20k` (bisenet_pl.data.presets); explicit arguments
            override it.
        split_list: a file of stems per split (`ImageSets/Segmentation/{split}.txt`, VOC and CVAT).
        val_fraction: for a folder without splits: this share of the images (drawn by a hash of each
            path, so the same files always give the same split) is val (and test), the rest train; the
            lists are written to `record_dir` (`data_split.yaml`; the config passes the run folder).
        classes, palette, ignore_index, label_map, reduce_zero_label: the class table; unset ones come
            from `<root>/classes.yaml`, then from the preset.
        Other arguments: `SegmentationDataModule`'s (batch size, workers, the augmentation's switches).
    """

    def __init__(
        self,
        root: str | Path,
        preset: str = "folder",
        image_dir: str | None = None,
        mask_dir: str | None = None,
        mask_suffix: str | None = None,
        list_file: str | None = None,
        split_list: str | None = None,
        splits: Mapping[str, str] | None = None,
        val_fraction: float | None = None,
        record_dir: str | Path | None = None,
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
            "split_list": split_list, "val_fraction": val_fraction, "splits": splits, "classes": classes,
            "palette": palette, "ignore_index": ignore_index,
            "label_map": label_map, "reduce_zero_label": reduce_zero_label, "scale": scale,
            "crop_size": crop_size, "test_scale": test_scale, "ratio_range": ratio_range,
        }  # fmt: skip
        fields.update({k: v for k, v in given.items() if v is not None})
        recipe = {k: fields[k] for k in _RECIPE_KEYS if k in fields}
        super().__init__(root, **recipe, **kwargs)
        self.preset = preset
        self.layout: dict[str, Any] = {k: fields.get(k) for k in _LAYOUT_KEYS}
        self.split_folders: dict[str, str] = dict(fields.get("splits") or {"train": "train", "val": "val"})
        self.val_fraction = None if fields.get("val_fraction") is None else float(fields["val_fraction"])
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise DatasetError(
                f"data.val_fraction={self.val_fraction}: give a share between 0 and 1, e.g. 0.2"
            )
        self.record_dir = None if record_dir is None else Path(record_dir)
        self._recorded = False
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
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.table.palette]

    @property
    def ignore_index(self) -> int:
        return self.encoding.ignore_index

    # ---- files ------------------------------------------------------------------------------------------
    def pairs(
        self, split: str, masks_required: bool = True, skipped: list[Path] | None = None
    ) -> tuple[list[Pair], list[Path]]:
        """(pairs, masks without an image) of `split`; hidden and system files go to `skipped`."""
        if self.val_fraction is not None:
            return self._drawn_split(split, masks_required, skipped)
        return self._find(self.split_folders.get(split, split), masks_required, skipped)

    def _find(
        self, folder: str, masks_required: bool, skipped: list[Path] | None, image_dir: str | None = None,
        mask_dir: str | None = None,
    ) -> tuple[list[Pair], list[Path]]:  # fmt: skip
        return find_pairs(
            self.root,
            folder,
            image_dir=image_dir or self.layout["image_dir"] or "images/{split}",
            mask_dir=mask_dir or self.layout["mask_dir"] or "masks/{split}",
            mask_suffix=self.layout["mask_suffix"] or "",
            list_file=self.layout["list_file"],
            masks_required=masks_required,
            split_list=self.layout["split_list"],
            skipped=skipped,
        )

    def _pool(self, masks_required: bool, skipped: list[Path] | None) -> tuple[list[Pair], list[Path]]:
        """Every pair `val_fraction` splits: the train split as the layout names it, or, when its folder
        does not exist, the folders without the split part (`images/`, `masks/`)."""
        image_dir = self.layout["image_dir"] or "images/{split}"
        mask_dir = self.layout["mask_dir"] or "masks/{split}"
        folder = self.split_folders.get("train", "train")
        if "{split}" in image_dir and not (self.root / image_dir.format(split=folder)).is_dir():
            flat_images = image_dir.replace("{split}", "").rstrip("/") or "."
            flat_masks = mask_dir.replace("{split}", "").rstrip("/") or "."
            return self._find("", masks_required, skipped, flat_images, flat_masks)
        return self._find(folder, masks_required, skipped)

    def _drawn_split(
        self, split: str, masks_required: bool, skipped: list[Path] | None
    ) -> tuple[list[Pair], list[Path]]:
        assert self.val_fraction is not None
        pool, orphans = self._pool(masks_required, skipped)
        if len(pool) < 2:
            raise DatasetError(f"data.val_fraction: {self.root} holds {len(pool)} image(s), too few to split")
        keys = {p.image: p.image.relative_to(self.root).as_posix() for p in pool}
        draws = {k: _draw(rel) for k, rel in keys.items()}
        val = {k for k, d in draws.items() if d < self.val_fraction}
        if not val:  # a tiny set: the lowest draw goes to val
            val = {min(draws, key=lambda k: draws[k])}
        if len(val) == len(pool):
            val.discard(max(draws, key=lambda k: draws[k]))
        train = [p for p in pool if p.image not in val]
        held = [p for p in pool if p.image in val]
        self._record(train, held)
        if split == "train":
            return train, orphans
        if split in ("val", "test"):
            return held, []
        raise DatasetError(f"split {split!r}: with data.val_fraction the splits are train and val")

    def _record(self, train: list[Pair], val: list[Pair]) -> None:
        """Write the drawn split into the run folder (`record_dir`, which the config sets to the run's
        output folder; rank zero), once."""
        if self._recorded or os.environ.get("RANK", "0") != "0" or os.environ.get("LOCAL_RANK", "0") != "0":
            return
        self._recorded = True
        if self.record_dir is None:
            return
        out = self.record_dir
        record = {
            "root": str(self.root),
            "val_fraction": self.val_fraction,
            "rule": "val if the sha1 of the image's path below root, as a fraction of 2**160, < val_fraction",
            "train": [p.image.relative_to(self.root).as_posix() for p in train],
            "val": [p.image.relative_to(self.root).as_posix() for p in val],
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / SPLIT_RECORD).write_text(yaml.safe_dump(record, sort_keys=False))
        log.info("val_fraction=%s: %d train, %d val images, lists in %s", self.val_fraction, len(train),
                 len(val), out / SPLIT_RECORD)  # fmt: skip

    def first_file_check(self, split: str = "train") -> None:
        """The cheap part of `python -m bisenet_pl.data.check`, run before the model is built, with its
        rules: the split pairs (hidden and system files skipped), its first image decodes strictly (no
        truncation, no decoder warning), its EXIF orientation agrees with its mask, and its first mask
        decodes through the class table."""
        skipped: list[Path] = []
        pairs, orphans = self.pairs(split, skipped=skipped)
        if skipped:
            log.info("%s: skipped %d hidden or system file(s) (e.g. %s)", split, len(skipped), skipped[0])
        if orphans:
            log.warning(
                "%s: %d mask(s) without an image (e.g. %s); `python -m bisenet_pl.data.check %s` lists them",
                split, len(orphans), orphans[0], self.root,
            )  # fmt: skip
        first = pairs[0]
        hint = f"Check the whole set: python -m bisenet_pl.data.check {self.root}"
        decoded = strict_decode(first.image)
        if decoded.problems:
            raise DatasetError(f"image {first.image}: {describe(decoded.problems)}. {hint}")
        if first.mask is not None:
            try:
                label = self.encoding.decode(read_mask(first.mask), first.mask)
            except DatasetError as err:
                raise DatasetError(f"{err}. {hint}") from None
            assert decoded.image is not None
            size = decoded.image.shape[:2]
            if decoded.orientation >= 5 and label.shape != size:
                raise DatasetError(
                    f"image {first.image} ({size[0]}x{size[1]} as decoded) and its mask {first.mask} "
                    f"({label.shape[0]}x{label.shape[1]}): {orientation_note(decoded.orientation)}. {hint}"
                )
            if decoded.orientation >= 2:
                log.warning("image %s: %s. %s", first.image, orientation_note(decoded.orientation), hint)
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


def _draw(relative: str) -> float:
    """A file's place in [0, 1): the sha1 of its path below the root (stable across machines and runs)."""
    return int.from_bytes(hashlib.sha1(relative.encode("utf-8")).digest(), "big") / float(1 << 160)
