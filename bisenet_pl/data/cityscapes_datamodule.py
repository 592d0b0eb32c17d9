"""`CityscapesDataModule` (`data=cityscapes`, the default): Cityscapes' own folder layout, or the synthetic
set written in that layout, specialising the generic `SegmentationDataModule` with its files, its class
table, the decoded-frame cache and the synthetic set's generation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from bisenet_pl.data.cityscapes import CLASSES, IGNORE_INDEX, PALETTE, CityscapesDataset, find_samples
from bisenet_pl.data.datamodule import SegmentationDataModule
from bisenet_pl.data.synthetic import ensure_dataset


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes (or the synthetic set in its layout) for training, validation, test and prediction.

    With `generate_if_missing`, `prepare_data()` writes the synthetic dataset into `root` when it holds none
    (`synthetic` = options for `make_synthetic_cityscapes`). When `synthetic_root` is given, generation only
    happens when `root` is that folder, so a mistyped path to real data fails instead of silently training
    on fake data. `cache` is a folder written by `python -m bisenet_pl.data.cache`: decoded frames, checked
    against the PNGs they came from. Other arguments: `SegmentationDataModule`'s.
    """

    # the fast decoder gives RGB; the pipeline gives the same pixels without a channel swap
    input_order = "rgb"

    def __init__(
        self,
        root: str | Path,
        generate_if_missing: bool = True,
        synthetic: dict[str, Any] | None = None,
        synthetic_root: str | Path | None = None,
        cache: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.generate_if_missing = bool(generate_if_missing)
        self.synthetic = dict(synthetic or {})
        self.synthetic_root = None if synthetic_root is None else Path(str(synthetic_root)).expanduser()
        # the decoded-frame cache (`python -m bisenet_pl.data.cache`), None: decode the PNGs
        self.cache = None if cache in (None, "") else Path(str(cache)).expanduser()

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASSES

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in PALETTE]

    @property
    def ignore_index(self) -> int:
        return IGNORE_INDEX

    @property
    def has_label_ids(self) -> bool:
        return True

    def _may_generate(self) -> bool:
        if not self.generate_if_missing:
            return False
        if self.synthetic_root is None:
            return True
        return self.root.resolve() == self.synthetic_root.resolve()

    def prepare_data(self) -> None:
        """Generate the synthetic dataset into `root` if allowed and `root` holds none (one log line)."""
        if self._may_generate():
            ensure_dataset(self.root, **self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # a no-op when present; covers callers that skip prepare_data()
        super().setup(stage)

    def make_dataset(self, split: str, transform: Any, keep_original: bool, with_labels: bool) -> Dataset:
        return CityscapesDataset(
            self.root,
            split,
            transform,
            keep_original=keep_original,
            with_labels=with_labels,
            cache=self.cache,
        )

    def first_file_check(self, split: str = "train") -> None:
        """Pairing the split's files (names only: cheap)."""
        find_samples(self.root, split)
