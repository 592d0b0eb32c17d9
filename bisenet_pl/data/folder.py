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

from bisenet_pl.data.cityscapes import seed_transform
from bisenet_pl.data.items import make_item
from bisenet_pl.data.strict import is_skipped, load_image, orientation, orientation_note
from bisenet_pl.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: The class table a dataset may keep next to its data.
CLASS_FILE = "classes.yaml"
#: CVAT's class table ("Segmentation mask 1.1" export): `name:r,g,b:parts:actions` per line.
LABELMAP_FILE = "labelmap.txt"

#: A stored mask value: an int (grey or palette index) or an (r, g, b) colour of a colour mask.
Value = int | tuple[int, int, int]


def value_counts(stored: np.ndarray) -> dict[Value, int]:
    """{stored value: pixel count} of a mask from `read_mask` ((H, W) values or (H, W, 3) colours)."""
    if stored.ndim == 2:
        counts = np.bincount(stored.ravel(), minlength=256)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    keys, counts = np.unique(_colour_keys(stored), return_counts=True)
    return {_colour(int(k)): int(n) for k, n in zip(keys, counts, strict=True)}


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]


def _colour(key: int) -> tuple[int, int, int]:
    return ((key >> 16) & 255, (key >> 8) & 255, key & 255)


def format_value(value: Value) -> str:
    return f"({value[0]}, {value[1]}, {value[2]})" if isinstance(value, tuple) else str(value)


@dataclass(frozen=True)
class LabelEncoding:
    """How a stored mask value becomes a class index (0..num_classes-1) or the ignore index.

    - `label_map` `{stored: class}` (e.g. `{0: 0, 255: 1}` for binary masks); values it does not list are
      used as stored;
    - `reduce_zero_label` (ADE20K): 0 becomes ignore, every other value v becomes v - 1 (mmseg's rule);
    - then a value must be a class or `ignore_index`; anything else is refused;
    - colour (RGB) masks go through `colours` `{(r, g, b): class}` instead (the class table's palette); a
      colour it does not list is refused the same way.
    """

    num_classes: int
    ignore_index: int = 255
    label_map: Mapping[int, int] = field(default_factory=dict)
    reduce_zero_label: bool = False
    colours: Mapping[tuple[int, int, int], int] = field(default_factory=dict)

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

    def lookup(self, value: Value) -> int:
        """The class (or ignore index) a stored value or colour decodes to; -1 if it is unknown."""
        if isinstance(value, tuple):
            return int(self.colours.get(value, -1))
        return int(self.table()[value])

    def prepare(self, stored: np.ndarray) -> np.ndarray:
        """A mask from `read_mask` as this encoding reads it: an RGB mask without a colour table whose
        pixels are all grey (r = g = b, a grey mask saved as RGB) becomes its grey values."""
        if stored.ndim == 3 and not self.colours:
            if (stored[..., 0] == stored[..., 1]).all() and (stored[..., 1] == stored[..., 2]).all():
                return np.ascontiguousarray(stored[..., 0])
        return stored

    def decode(self, stored: np.ndarray, path: Path | str) -> np.ndarray:
        """uint8 class map of a stored mask; `DatasetError` naming the unknown values and the fix."""
        stored = self.prepare(stored)
        if stored.ndim == 3:
            return self._decode_colours(stored, path)
        table = self.table()
        counts = np.bincount(stored.ravel(), minlength=256)
        bad = np.flatnonzero((counts > 0) & (table < 0))
        if bad.size:
            raise DatasetError(f"{path}: {unknown_values_message(bad.tolist(), self)}")
        return table[stored].astype(np.uint8)

    def _decode_colours(self, rgb: np.ndarray, path: Path | str) -> np.ndarray:
        if not self.colours:
            raise DatasetError(colour_mask_without_table(path))
        known = sorted((_colour_keys(np.array(c, np.uint8)), t) for c, t in self.colours.items())
        table_keys = np.array([int(k) for k, _ in known], np.int32)
        targets = np.array([t for _, t in known], np.uint8)
        keys = _colour_keys(rgb)
        index = np.searchsorted(table_keys, keys).clip(0, len(table_keys) - 1)
        found = table_keys[index] == keys
        if not found.all():
            bad = sorted({_colour(int(k)) for k in np.unique(keys[~found])[:10]})
            raise DatasetError(f"{path}: {unknown_values_message(bad, self)}")
        return targets[index]


def colour_mask_without_table(path: Path | str) -> str:
    return (
        f"mask {path} is a colour (RGB) image and the class table gives no colours: give each class its "
        "colour (`palette: [[r, g, b], ...]` in classes.yaml, data.palette=[[r,g,b],...], or CVAT's "
        "labelmap.txt) so colours map to classes, or store single-channel class indices"
    )


def unknown_values_message(values: Sequence[Value], enc: LabelEncoding) -> str:
    """What is wrong with values outside the table, and the usual fix."""
    colours = [v for v in values if isinstance(v, tuple)]
    if colours:
        return (
            f"mask colours {', '.join(format_value(c) for c in colours[:10])} are not in the colour table "
            f"(the palette, one colour per class): add the colour to the palette of its class, or repaint "
            "those pixels"
        )
    ints = [int(v) for v in values if not isinstance(v, tuple)]
    return _unknown_ints_message(ints, enc)


def _unknown_ints_message(values: Sequence[int], enc: LabelEncoding) -> str:
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


def _files(folder: Path, skipped: list[Path] | None = None) -> list[Path]:
    """Image files below `folder`, sorted; hidden and system files (`._a.jpg`, `.DS_Store`, `Thumbs.db`,
    `__MACOSX/`) go to `skipped` instead."""
    found = []
    for p in folder.rglob("*"):
        if not p.is_file():
            continue
        if is_skipped(p, folder):
            if skipped is not None:
                skipped.append(p)
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            found.append(p)
    return sorted(found)


def _find_image(folder: Path, stem: str, suffix: str = "") -> Path | None:
    """`folder/<stem><suffix>.<any image extension>` (lower or upper case), or None."""
    for ext in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{stem}{suffix}{ext}", folder / f"{stem}{suffix}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def find_pairs(
    root: Path,
    split: str,
    image_dir: str = "images/{split}",
    mask_dir: str = "masks/{split}",
    mask_suffix: str = "",
    list_file: str | None = None,
    masks_required: bool = True,
    split_list: str | None = None,
    skipped: list[Path] | None = None,
) -> tuple[list[Pair], list[Path]]:
    """(pairs, masks without an image) of one split.

    Images and masks pair by their path below the two folders, the mask's stem being the image's stem +
    `mask_suffix` (any image extension: `a.jpg` pairs with `a.png`). With `list_file` (e.g.
    `splits/{split}.txt`), each line is `image mask` relative to `root` instead; with `split_list` (VOC's
    and CVAT's `ImageSets/Segmentation/{split}.txt`), each line is a file stem found in the two folders.
    Hidden and system files (`._a.jpg`, `.DS_Store`, ...) are never data: they go to `skipped`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data.root={root} does not exist")
    if list_file:
        return _pairs_from_list(root, root / list_file.format(split=split)), []
    images_at = root / image_dir.format(split=split)
    masks_at = root / mask_dir.format(split=split)
    if split_list:
        return _pairs_from_stems(root / split_list.format(split=split), images_at, masks_at, mask_suffix,
                                 masks_required), []  # fmt: skip
    if not images_at.is_dir():
        raise DatasetError(f"split {split!r}: no image folder {images_at} (data.image_dir={image_dir!r})")
    images = _files(images_at, skipped)
    if not images:
        raise DatasetError(
            f"split {split!r}: no image file ({', '.join(IMAGE_EXTENSIONS)}) under {images_at}"
        )
    masks: dict[Path, Path] = {}
    if masks_at.is_dir():
        for mask in _files(masks_at, skipped):
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


def _pairs_from_stems(
    path: Path, images_at: Path, masks_at: Path, mask_suffix: str, masks_required: bool
) -> list[Pair]:
    """Pairs of a split list of stems (VOC, CVAT): `images_at/<stem>.<ext>` with `masks_at/<stem>.png`."""
    if not path.is_file():
        raise DatasetError(f"split list {path} does not exist (data.split_list)")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or line.lstrip().startswith("#"):
            continue
        stem = parts[0]
        image = _find_image(images_at, stem)
        if image is None:
            raise DatasetError(f"{path}:{number}: no image {images_at / stem}.jpg (or another extension)")
        mask = _find_image(masks_at, stem, mask_suffix)
        if mask is None and masks_required:
            raise DatasetError(
                f"{path}:{number}: image {image} has no mask {masks_at / stem}{mask_suffix}.png"
            )
        pairs.append(Pair(image, mask))
    if not pairs:
        raise DatasetError(f"split list {path} names no image")
    return pairs


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
    """A mask's stored values, decoded by PIL unchanged (as mmseg's 'unchanged': no EXIF orientation):
    uint8 (H, W) for grey and palette PNGs (their indices), uint8 (H, W, 3) colours for an RGB(A) mask
    (alpha dropped; `LabelEncoding.prepare` reads a grey picture saved as RGB as grey)."""
    try:
        with Image.open(path) as pil:
            if pil.mode in ("RGB", "RGBA", "RGBX"):
                return np.array(pil.convert("RGB"))
            if pil.mode not in ("L", "P", "I;16", "I", "1"):
                raise DatasetError(
                    f"mask {path} is a {pil.mode} image: masks are class indices (8-bit grey or palette PNG) "
                    "or colours (RGB PNG with a colour per class)"
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
        labelmap = Path(root) / LABELMAP_FILE
        if labelmap.is_file() and not stored.get("classes"):
            stored = {**read_labelmap(labelmap), **stored}
            path = labelmap
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
        given_colours = pick("palette", palette)
        colours = given_colours or _default_palette(len(names))
        try:
            colours = [[int(v) for v in c] for c in colours]
        except (TypeError, ValueError):
            colours = []
        if len(colours) != len(names) or any(
            len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colours
        ):
            raise DatasetError(f"palette: need {len(names)} [r, g, b] colours (0..255), one per class")
        colour_table: dict[tuple[int, int, int], int] = {}
        if given_colours:  # the palette also reads colour masks
            for index, c in enumerate(colours):
                key = (c[0], c[1], c[2])
                if key in colour_table:
                    raise DatasetError(
                        f"palette: classes {names[colour_table[key]]!r} and {names[index]!r} have the same "
                        f"colour {list(key)}: colour masks could not tell them apart"
                    )
                colour_table[key] = index
        mapping = pick("label_map", label_map) or {}
        encoding = LabelEncoding(
            num_classes=len(names),
            ignore_index=int(
                pick("ignore_index", ignore_index) if pick("ignore_index", ignore_index) is not None else 255
            ),
            label_map={int(k): int(v) for k, v in dict(mapping).items()},
            reduce_zero_label=bool(pick("reduce_zero_label", reduce_zero_label) or False),
            colours=colour_table,
        )
        return cls(names, colours, encoding)


def read_labelmap(path: Path) -> dict[str, Any]:
    """CVAT's `labelmap.txt` ("Segmentation mask 1.1"): `name:r,g,b:parts:actions` per line, in class
    order (`background:0,0,0::` first) -> {classes, palette}."""
    names, colours = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        colour = rest.split(":", 1)[0]
        try:
            rgb = [int(v) for v in colour.split(",")]
        except ValueError:
            rgb = []
        if not name.strip() or len(rgb) != 3:
            raise DatasetError(f"{path}:{number}: expected `name:r,g,b::` (CVAT's labelmap), got {line!r}")
        names.append(name.strip())
        colours.append(rgb)
    if not names:
        raise DatasetError(f"{path} names no class")
    return {"classes": names, "palette": colours}


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
            if label.shape != image.shape[:2] and (tag := orientation(pair.image)) >= 5:
                raise DatasetError(
                    f"Image {pair.image} is {image.shape[0]}x{image.shape[1]} as decoded but its mask "
                    f"{pair.mask} is {label.shape[0]}x{label.shape[1]}: {orientation_note(tag)}"
                )
        return make_item(image, label, pair.name, pair.image, pair.mask, self.transform, self.keep_original)


__all__ = [
    "CLASS_FILE",
    "LABELMAP_FILE",
    "ClassTable",
    "FolderDataset",
    "LabelEncoding",
    "Pair",
    "find_pairs",
    "format_value",
    "read_labelmap",
    "read_mask",
    "unknown_values_message",
    "value_counts",
]
