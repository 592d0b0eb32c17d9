"""Any segmentation dataset: a folder of images and a folder of masks paired by file stem (or list files of
`image mask` lines), with an explicit label encoding (docs/own_data.md).

The label encoding is where users of BiSeNetV2 lose days: 0/255 binary masks read with 255 as "ignore"
(the model learns one class, mIoU sticks at 0.5), ADE20K's 0 meant as "other" (`reduce_zero_label`), a
value meant as background but outside the class table. Here every stored value is decoded through one
table, and a value that is neither a class nor the ignore index is an error naming the file, the value
and the fix, never a NaN loss 2000 steps later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from torch.utils.data import Dataset

from bisenet_pl.data.cityscapes import load_image, seed_transform
from bisenet_pl.data.items import make_item
from bisenet_pl.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: The class table a dataset may keep next to its data.
CLASS_FILE = "classes.yaml"


@dataclass(frozen=True)
class LabelEncoding:
    """How a stored mask value becomes a class index (0..num_classes-1) or the ignore index.

    - `label_map` `{stored: class}` (e.g. `{0: 0, 255: 1}` for binary masks); values it does not list are
      used as stored;
    - `reduce_zero_label` (ADE20K): 0 becomes ignore, every other value v becomes v - 1 (mmseg's rule);
    - then a value must be a class or `ignore_index`; anything else is refused.
    """

    num_classes: int
    ignore_index: int = 255
    label_map: Mapping[int, int] = field(default_factory=dict)
    reduce_zero_label: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= 255:
            raise DatasetError(f"a dataset needs 1..255 classes, got {self.num_classes}")
        for stored, target in self.label_map.items():
            if not (0 <= int(stored) <= 255) or not (
                0 <= int(target) < self.num_classes or target == self.ignore_index
            ):
                raise DatasetError(
                    f"label_map {{{stored}: {target}}}: a stored value 0..255 must map to a class "
                    f"0..{self.num_classes - 1} or the ignore index {self.ignore_index}"
                )

    def table(self) -> np.ndarray:
        """(256,) int16: stored value -> class or ignore index; -1 marks a value that cannot occur."""
        values = np.arange(256, dtype=np.int16)
        if self.reduce_zero_label:
            values = np.where(values == 0, self.ignore_index, values - 1).astype(np.int16)
            values[255] = self.ignore_index  # 255 stays ignore (mmseg: 255 - 1 = 254 is set back to 255)
        for stored, target in self.label_map.items():
            values[int(stored)] = int(target)
        valid = (values >= 0) & ((values < self.num_classes) | (values == self.ignore_index))
        return np.where(valid, values, -1).astype(np.int16)

    def decode(self, stored: np.ndarray, path: Path | str) -> np.ndarray:
        """uint8 class map of a stored mask; `DatasetError` naming the unknown values and the fix."""
        table = self.table()
        counts = np.bincount(stored.ravel(), minlength=256)
        bad = np.flatnonzero((counts > 0) & (table < 0))
        if bad.size:
            raise DatasetError(f"{path}: {unknown_values_message(bad.tolist(), self)}")
        return table[stored].astype(np.uint8)


def unknown_values_message(values: Sequence[int], enc: LabelEncoding) -> str:
    """What is wrong with values outside the table, and the usual fix."""
    text = (
        f"mask values {list(values)[:10]} are neither a class (0..{enc.num_classes - 1} after the encoding) "
        f"nor the ignore index {enc.ignore_index}"
    )
    if enc.num_classes == 2 and not enc.label_map:
        text += "; 0/1/255-style binary masks: add data.label_map={0: 0, 255: 1} (or the values you store)"
    elif max(values) == enc.num_classes and not enc.reduce_zero_label:
        text += "; values 1..N with 0 as 'other' (ADE20K style): set data.reduce_zero_label=true"
    else:
        text += "; map them with data.label_map={value: class}, or add classes"
    return text


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path | None

    @property
    def name(self) -> str:
        return self.image.stem


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def find_pairs(
    root: Path,
    split: str,
    image_dir: str = "images/{split}",
    mask_dir: str = "masks/{split}",
    mask_suffix: str = "",
    list_file: str | None = None,
    masks_required: bool = True,
) -> tuple[list[Pair], list[Path]]:
    """(pairs, masks without an image) of one split.

    Images and masks pair by their path below the two folders, the mask's stem being the image's stem +
    `mask_suffix` (any image extension: `a.jpg` pairs with `a.png`). With `list_file` (e.g.
    `splits/{split}.txt`), each line is `image mask` relative to `root` instead.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data.root={root} does not exist")
    if list_file:
        return _pairs_from_list(root, root / list_file.format(split=split)), []
    images_at = root / image_dir.format(split=split)
    masks_at = root / mask_dir.format(split=split)
    if not images_at.is_dir():
        raise DatasetError(f"split {split!r}: no image folder {images_at} (data.image_dir={image_dir!r})")
    images = _files(images_at)
    if not images:
        raise DatasetError(
            f"split {split!r}: no image file ({', '.join(IMAGE_EXTENSIONS)}) under {images_at}"
        )
    masks: dict[Path, Path] = {}
    if masks_at.is_dir():
        for mask in _files(masks_at):
            rel = mask.relative_to(masks_at)
            stem = rel.with_suffix("").as_posix()
            if mask_suffix and stem.endswith(mask_suffix):
                stem = stem[: -len(mask_suffix)]
            masks[Path(stem)] = mask
    elif masks_required:
        raise DatasetError(f"split {split!r}: no mask folder {masks_at} (data.mask_dir={mask_dir!r})")
    pairs, used = [], set()
    for image in images:
        key = image.relative_to(images_at).with_suffix("")
        found = masks.get(key)
        if found is None and masks_required:
            raise DatasetError(
                f"image {image} has no mask: expected {masks_at / key}{mask_suffix}.png (or another image "
                f"extension). Run `python -m bisenet_pl.data.check` to list every unpaired file"
            )
        used.add(key)
        pairs.append(Pair(image, found))
    orphans = [m for k, m in masks.items() if k not in used]
    return pairs, orphans


def _pairs_from_list(root: Path, path: Path) -> list[Pair]:
    if not path.is_file():
        raise DatasetError(f"list file {path} does not exist (data.list_file)")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or line.lstrip().startswith("#"):
            continue
        if len(parts) > 2:
            raise DatasetError(f"{path}:{number}: expected `image [mask]`, got {line!r}")
        image = root / parts[0]
        mask = root / parts[1] if len(parts) == 2 else None
        for p in (image, mask):
            if p is not None and not p.is_file():
                raise DatasetError(f"{path}:{number}: {p} does not exist")
        pairs.append(Pair(image, mask))
    if not pairs:
        raise DatasetError(f"list file {path} names no image")
    return pairs


def read_mask(path: Path) -> np.ndarray:
    """A mask's stored values, uint8 (H, W), decoded by PIL unchanged (palette PNGs give their indices)."""
    try:
        with Image.open(path) as pil:
            if pil.mode not in ("L", "P", "I;16", "I", "1"):
                raise DatasetError(
                    f"mask {path} is a {pil.mode} image: masks are single-channel class indices (8-bit grey "
                    "or palette PNG), not colour pictures"
                )
            mask = np.array(pil)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"cannot decode mask {path}: {err}") from None
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.dtype != np.uint8:
        if mask.size and int(mask.max()) > 255:
            raise DatasetError(f"mask {path} holds values up to {int(mask.max())}: at most 255 are supported")
        mask = mask.astype(np.uint8)
    return mask


@dataclass
class ClassTable:
    """Names, palette and label encoding of a dataset: from `classes.yaml` beside the data and/or config."""

    classes: list[str]
    palette: list[list[int]]
    encoding: LabelEncoding

    @classmethod
    def resolve(
        cls,
        root: Path,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int | None = None,
        label_map: Mapping[Any, Any] | None = None,
        reduce_zero_label: bool | None = None,
        defaults: Mapping[str, Any] | None = None,
        class_file: str = CLASS_FILE,
    ) -> ClassTable:
        """Each field from the arguments (the config), else `<root>/classes.yaml`, else `defaults` (a
        preset's); only the class names are required."""
        stored: dict[str, Any] = {}
        path = Path(root) / class_file
        if path.is_file():
            try:
                stored = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise DatasetError(f"{path} is not valid YAML: {err}") from None
            if not isinstance(stored, dict):
                raise DatasetError(f"{path} must be a mapping with a `classes` list")
        fallback = dict(defaults or {})

        def pick(key: str, given: Any) -> Any:
            if given is not None:
                return given
            return stored[key] if stored.get(key) is not None else fallback.get(key)

        names = pick("classes", list(classes) if classes else None)
        if not names:
            raise DatasetError(
                f"no class names: write {path} (classes: [background, ...]) or pass data.classes=[...]"
            )
        names = [str(n) for n in names]
        colours = pick("palette", palette) or _default_palette(len(names))
        colours = [[int(v) for v in c] for c in colours]
        if len(colours) != len(names) or any(len(c) != 3 for c in colours):
            raise DatasetError(f"palette: need {len(names)} [r, g, b] colours, one per class")
        mapping = pick("label_map", label_map) or {}
        encoding = LabelEncoding(
            num_classes=len(names),
            ignore_index=int(
                pick("ignore_index", ignore_index) if pick("ignore_index", ignore_index) is not None else 255
            ),
            label_map={int(k): int(v) for k, v in dict(mapping).items()},
            reduce_zero_label=bool(pick("reduce_zero_label", reduce_zero_label) or False),
        )
        return cls(names, colours, encoding)


def _default_palette(n: int) -> list[list[int]]:
    """Distinct colours for n classes (a fixed golden-angle hue walk), black kept for nothing."""
    import colorsys

    return [
        [int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)]
        for i in range(n)
    ]


class FolderDataset(Dataset):
    """One split of a folder dataset as the same dicts `CityscapesDataset` serves (see `make_item`)."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        encoding: LabelEncoding,
        transform: Callable[..., dict[str, Any]] | None = None,
        keep_original: bool = False,
        with_labels: bool = True,
    ) -> None:
        self.pairs = list(pairs)
        self.encoding = encoding
        self.transform = transform
        self.keep_original = keep_original
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.pairs)

    def reseed(self, seed: int | Sequence[int]) -> None:
        if self.transform is not None and hasattr(self.transform, "set_random_state"):
            seed_transform(self.transform, seed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        image = load_image(pair.image)
        label = None
        if self.with_labels and pair.mask is not None:
            label = self.encoding.decode(read_mask(pair.mask), pair.mask)
        return make_item(image, label, pair.name, pair.image, pair.mask, self.transform, self.keep_original)


__all__ = [
    "CLASS_FILE",
    "ClassTable",
    "FolderDataset",
    "LabelEncoding",
    "Pair",
    "find_pairs",
    "read_mask",
    "unknown_values_message",
]
