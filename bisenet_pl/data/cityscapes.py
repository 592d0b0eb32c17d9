"""Cityscapes: class names, palette, label tables and normalisation (defined once for the package), and
the dataset that reads Cityscapes' own folder layout (docs/reproduction.md#data).

Files are paired when the dataset is built (cheap: names only) and decoded and checked when an item is
loaded, so bad input fails with a `DatasetError` naming the file and the fix, not a traceback from cv2.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from bisenet_pl.data.items import make_item
from bisenet_pl.data.png import decode_plain_png
from bisenet_pl.data.preprocess import MEAN, STD, normalize  # noqa: F401  (MEAN/STD: re-exported)
from bisenet_pl.errors import DatasetError

# The 19 train classes in trainId order (docs/reproduction.md#data), as mmseg's METAINFO and
# cityscapesscripts name them.
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


# labelId -> trainId (docs/reproduction.md#data); every other id maps to 255.
_TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
TRAIN_ID_TO_LABEL_ID: np.ndarray = np.array(_TRAIN_LABEL_IDS, dtype=np.uint8)
LABEL_ID_TO_TRAIN_ID: np.ndarray = np.full(256, IGNORE_INDEX, dtype=np.uint8)
LABEL_ID_TO_TRAIN_ID[list(_TRAIN_LABEL_IDS)] = np.arange(NUM_CLASSES, dtype=np.uint8)

# --------------------------------------------------------------------------------------------------
# The full Cityscapes label table (cityscapesscripts `helpers/labels.py`, docs/reproduction.md#data): the
# synthetic
# generator writes polygons, labelIds, instanceIds and colour maps with exactly these names, ids and colours,
# so that files it writes read like the real ones to every tool (ours, mmseg's converter, cityscapesscripts).
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CityscapesLabel:
    """One row of Cityscapes' label table."""

    name: str
    id: int
    train_id: int
    has_instances: bool
    color: tuple[int, int, int]


LABELS: tuple[CityscapesLabel, ...] = tuple(
    CityscapesLabel(name, id_, train_id, inst, color)
    for name, id_, train_id, inst, color in (
        ("unlabeled", 0, 255, False, (0, 0, 0)),
        ("ego vehicle", 1, 255, False, (0, 0, 0)),
        ("rectification border", 2, 255, False, (0, 0, 0)),
        ("out of roi", 3, 255, False, (0, 0, 0)),
        ("static", 4, 255, False, (0, 0, 0)),
        ("dynamic", 5, 255, False, (111, 74, 0)),
        ("ground", 6, 255, False, (81, 0, 81)),
        ("road", 7, 0, False, (128, 64, 128)),
        ("sidewalk", 8, 1, False, (244, 35, 232)),
        ("parking", 9, 255, False, (250, 170, 160)),
        ("rail track", 10, 255, False, (230, 150, 140)),
        ("building", 11, 2, False, (70, 70, 70)),
        ("wall", 12, 3, False, (102, 102, 156)),
        ("fence", 13, 4, False, (190, 153, 153)),
        ("guard rail", 14, 255, False, (180, 165, 180)),
        ("bridge", 15, 255, False, (150, 100, 100)),
        ("tunnel", 16, 255, False, (150, 120, 90)),
        ("pole", 17, 5, False, (153, 153, 153)),
        ("polegroup", 18, 255, False, (153, 153, 153)),
        ("traffic light", 19, 6, False, (250, 170, 30)),
        ("traffic sign", 20, 7, False, (220, 220, 0)),
        ("vegetation", 21, 8, False, (107, 142, 35)),
        ("terrain", 22, 9, False, (152, 251, 152)),
        ("sky", 23, 10, False, (70, 130, 180)),
        ("person", 24, 11, True, (220, 20, 60)),
        ("rider", 25, 12, True, (255, 0, 0)),
        ("car", 26, 13, True, (0, 0, 142)),
        ("truck", 27, 14, True, (0, 0, 70)),
        ("bus", 28, 15, True, (0, 60, 100)),
        ("caravan", 29, 255, True, (0, 0, 90)),
        ("trailer", 30, 255, True, (0, 0, 110)),
        ("train", 31, 16, True, (0, 80, 100)),
        ("motorcycle", 32, 17, True, (0, 0, 230)),
        ("bicycle", 33, 18, True, (119, 11, 32)),
        ("license plate", -1, -1, False, (0, 0, 142)),
    )
)
NAME_TO_LABEL: dict[str, CityscapesLabel] = {label.name: label for label in LABELS}
MAX_LABEL_ID = (
    33  # labelIds PNGs hold 0..33 (license plate, id -1, is never drawn: docs/reproduction.md#data)
)

# Published split sizes (docs/reproduction.md#data) and cities; used to tell an incomplete download from the
# full set.
REAL_SPLIT_SIZES: dict[str, int] = {"train": 2975, "val": 500, "test": 1525}
# The synthetic generator leaves this file at the dataset root; the dataset then knows not to compare
# its size with the published one.
SYNTHETIC_MARKER = "synthetic_cityscapes.json"

IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"

_MAKE_DATA_HINT = (
    "To get data: point `data.root` at a Cityscapes folder holding leftImg8bit/ and gtFine/ "
    "(https://www.cityscapes-dataset.com/downloads/), or write a small synthetic set in the same layout "
    "with `python -m bisenet_pl.data.synthetic {root}` (the default data root is generated automatically "
    "on first use)."
)

# trainId -> RGB, every other value (255 included) black.
# trainId -> labelId for submissions (docs/reproduction.md#data); 255 and unknown values -> 0 ("unlabeled").
_TRAIN_TO_LABEL_LUT = np.zeros(256, dtype=np.uint8)
_TRAIN_TO_LABEL_LUT[:NUM_CLASSES] = TRAIN_ID_TO_LABEL_ID
# Values a label PNG may hold: labelIds 0..33 (255 tolerated: some tools write it for "unlabeled"; it maps to
# ignore), trainIds 0..18 and 255.
_VALID_LABEL_IDS = np.zeros(256, dtype=bool)
_VALID_LABEL_IDS[: MAX_LABEL_ID + 1] = True
_VALID_LABEL_IDS[IGNORE_INDEX] = True
_VALID_TRAIN_IDS = np.zeros(256, dtype=bool)
_VALID_TRAIN_IDS[:NUM_CLASSES] = True
_VALID_TRAIN_IDS[IGNORE_INDEX] = True


log = logging.getLogger(__name__)


def train_ids_to_label_ids(train_id_map: np.ndarray) -> np.ndarray:
    """trainIds -> Cityscapes labelIds (uint8), as the benchmark server and cityscapesscripts expect.

    255 (ignore) becomes 0 ("unlabeled"), so a prediction map converts without a special case.
    """
    ids = np.asarray(train_id_map)
    if ids.dtype != np.uint8:
        ids = np.where((ids >= 0) & (ids < 256), ids, IGNORE_INDEX).astype(np.uint8)
    return _TRAIN_TO_LABEL_LUT[ids]


@dataclass(frozen=True)
class Sample:
    """One image and where its label is (None when unlabelled)."""

    image: Path
    label: Path | None
    label_kind: str | None  # "trainIds" (used as is) or "labelIds" (mapped through LABEL_ID_TO_TRAIN_ID)

    @property
    def name(self) -> str:
        return self.image.name[: -len(IMAGE_SUFFIX)]


def find_samples(root: Path, split: str, ignore_missing_labels: bool = False) -> list[Sample]:
    """Pair every `leftImg8bit/<split>/**/<stem>_leftImg8bit.png` with its gtFine label
    (docs/reproduction.md#data).

    Sorted by path, as mmseg scans. Prefers `_gtFine_labelTrainIds.png`; falls back to
    `_gtFine_labelIds.png` (mapped on the fly, docs/data.md), so no conversion step is needed.
    Split `test` has no public labels: there a missing label is normal.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Dataset root {root} does not exist. " + _MAKE_DATA_HINT.format(root=root))
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        found = sorted(p.name for p in (root / "leftImg8bit").glob("*") if p.is_dir())
        where = f"it has splits {found}" if found else f"{root / 'leftImg8bit'} is missing or empty"
        raise DatasetError(
            f"No split {split!r} in {root}: expected the folder {image_dir} ({where}). "
            + _MAKE_DATA_HINT.format(root=root)
        )
    images = sorted(image_dir.rglob("*" + IMAGE_SUFFIX))
    if not images:
        raise DatasetError(
            f"Split {split!r} is empty: no '*{IMAGE_SUFFIX}' file under {image_dir}. Cityscapes images are "
            f"named <city>_<seq>_<frame>{IMAGE_SUFFIX} in one folder per city. "
            + _MAKE_DATA_HINT.format(root=root)
        )
    labels_optional = ignore_missing_labels or split == "test"
    samples = []
    for image in images:
        stem = image.name[: -len(IMAGE_SUFFIX)]
        label_dir = root / "gtFine" / split / image.parent.relative_to(image_dir)
        train_ids = label_dir / (stem + TRAIN_IDS_SUFFIX)
        label_ids = label_dir / (stem + LABEL_IDS_SUFFIX)
        if train_ids.is_file():
            samples.append(Sample(image, train_ids, "trainIds"))
        elif label_ids.is_file():
            samples.append(Sample(image, label_ids, "labelIds"))
        elif labels_optional:
            samples.append(Sample(image, None, None))
        else:
            raise DatasetError(
                f"Image {image} has no label: expected {train_ids} or {label_ids}. Download gtFine for "
                f"split {split!r} (gtFine_trainvaltest.zip), or pass ignore_missing_labels=True to serve the "
                "images without labels (prediction only)."
            )
    return samples


# ---- decoding ---------------------------------------------------------------------------------------
# The two PNGs of a frame are most of a training item's cost. Plain 8-bit RGB and grey PNGs go through
# `png.decode_plain_png` (Wuffs, checked chunk by chunk: the same pixels as cv2 and PIL, several times
# cheaper); any other file, and any file it refuses, goes to cv2 / PIL as before, so those keep their exact
# behaviour and their error messages.


def _image_error(path: Path) -> DatasetError:
    return DatasetError(
        f"Cannot decode image {path} (corrupt or truncated PNG, or unreadable). Re-extract it from "
        "leftImg8bit_trainvaltest.zip, or delete it."
    )


def load_image(path: Path, order: str = "bgr") -> np.ndarray:
    """The image as uint8 (H, W, 3), BGR as cv2 decodes it and mmseg reads it
    (docs/reproduction.md#augmentation), or RGB with `order="rgb"` (no channel swap: what the train
    pipeline takes when its `input_order` is "rgb"; the same pixels either way)."""
    if order not in ("bgr", "rgb"):
        raise ValueError(f"order must be 'bgr' or 'rgb', got {order!r}")
    try:
        data = Path(path).read_bytes()
    except OSError:
        raise _image_error(path) from None
    image = decode_plain_png(data, order)
    if image is not None:
        return image
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:  # cv2 does not raise: a corrupt or truncated file gives None
        raise _image_error(path)
    return image if order == "bgr" else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_label(path: Path) -> tuple[np.ndarray, str]:
    """The label PNG's pixels and PIL mode name (the fast decoder for 8-bit grey, PIL for anything else)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DatasetError(f"Cannot read label {path} ({err.strerror}).") from None
    grey = decode_plain_png(data, "grey")
    if grey is not None:
        return grey, "L"
    try:
        with Image.open(io.BytesIO(data)) as pil:
            mode = pil.mode
            label = np.array(pil)
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(
            f"Cannot decode label {path} ({err}): corrupt or truncated PNG. Re-extract gtFine, or regenerate "
            "the labelTrainIds with mmseg's tools/dataset_converters/cityscapes.py."
        ) from err
    return label, mode


# 1 where a stored value is not allowed (cheap check first, the full bincount only to name the bad ids)
_INVALID_TRAIN_IDS = (~_VALID_TRAIN_IDS).astype(np.uint8)
_INVALID_LABEL_IDS = (~_VALID_LABEL_IDS).astype(np.uint8)


def load_label(sample: Sample) -> np.ndarray:
    """The label as uint8 trainIds (H, W), 255 = ignore; checks the ids against Cityscapes' table.

    Decoded unchanged (PIL, or the fast decoder for 8-bit grey PNGs: the same values;
    docs/reproduction.md#augmentation); a labelIds map goes through LABEL_ID_TO_TRAIN_ID.
    """
    path = sample.label
    assert path is not None
    label, mode = _decode_label(path)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise DatasetError(
            f"Label {path} is a {mode} image of shape {label.shape}: expected a single-channel 8-bit PNG of "
            f"Cityscapes {sample.label_kind} (did you point at a *_gtFine_color.png or instanceIds file?)."
        )
    train_ids = sample.label_kind == "trainIds"
    if not label.flags.c_contiguous:
        label = np.ascontiguousarray(label)
    if cv2.LUT(label, _INVALID_TRAIN_IDS if train_ids else _INVALID_LABEL_IDS).any():
        valid = _VALID_TRAIN_IDS if train_ids else _VALID_LABEL_IDS
        counts = np.bincount(label.ravel(), minlength=256)
        bad = np.flatnonzero((counts > 0) & ~valid)
        allowed = "0..18 and 255" if train_ids else f"0..{MAX_LABEL_ID}"
        raise DatasetError(
            f"Label {path} holds ids {bad.tolist()} outside Cityscapes' {sample.label_kind} ({allowed}). "
            "Regenerate it from the *_gtFine_polygons.json (cityscapesscripts' createTrainIdLabelImgs), or "
            "remove it."
        )
    if not train_ids:
        label = cv2.LUT(label, LABEL_ID_TO_TRAIN_ID)  # = LABEL_ID_TO_TRAIN_ID[label], several times faster
    return label


class CityscapesDataset(Dataset):
    """Cityscapes (or the synthetic set in its layout) as dicts of tensors.

    Item: `image` float32 (3, H, W) normalised RGB after `transform`; `label` int64 (H, W) trainIds with 255
    = ignore (absent for unlabelled images); `name` (the stem, e.g. `frankfurt_000000_000294`);
    `image_path` (str); `ori_size` (H, W) of the image on disk.

    `transform` is called as `transform(image=bgr_uint8, mask=label_uint8)` (albumentations style) and must
    return normalised RGB float32 HWC under `image` (see `transforms.py`); None only normalises.
    Files are paired at construction and decoded and checked on load, so building the dataset stays cheap.
    With `ignore_missing_labels=True` (or split `test`) images without labels are served without `label`;
    `with_labels=False` drops labels altogether (prediction).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
        keep_original: bool = False,
        ignore_missing_labels: bool = False,
        with_labels: bool = True,
        cache: str | Path | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.split = split
        self.transform = transform
        # ms+flip resizes the *original* image once per ratio; the item then carries it as `original`.
        self.keep_original = keep_original
        self.with_labels = with_labels
        self.samples = find_samples(self.root, split, ignore_missing_labels or not with_labels)
        self._report_size()
        # The decoded-frame cache (`bisenet_pl.data.frame_cache`), checked against the files just found:
        # a cache that does not match them is refused here, naming the file.
        self.cache = None
        if cache is not None:
            from bisenet_pl.data.frame_cache import FrameCache

            self.cache = FrameCache(cache, self.root, split, self.samples)
            log.info("split %r read from the decoded-frame cache %s", split, self.cache.cache / split)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def is_synthetic(self) -> bool:
        return (self.root / SYNTHETIC_MARKER).is_file()

    def _report_size(self) -> None:
        n, expected = len(self.samples), REAL_SPLIT_SIZES.get(self.split)
        if self.is_synthetic:
            log.info("Synthetic Cityscapes-layout data, split %r: %d images (%s)", self.split, n, self.root)
        elif expected is not None and n != expected:
            log.warning(
                "%s: split %r holds %d images but Cityscapes' has %d (incomplete download or a subset?); "
                "numbers will not be comparable with the published ones.",
                self.root,
                self.split,
                n,
                expected,
            )
        else:
            log.info("Cityscapes split %r: %d images (%s)", self.split, n, self.root)

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Give the transform's random generators a new seed (called in each DataLoader worker)."""
        if self.transform is not None and hasattr(self.transform, "set_random_state"):
            seed_transform(self.transform, seed)

    def _input_order(self) -> str:
        """The channel order the transform takes ("rgb": no swap after the fast decode); BGR whenever the
        item carries the original image or no transform normalises it (`make_item` reads BGR then)."""
        if self.transform is None or self.keep_original:
            return "bgr"
        return str(getattr(self.transform, "input_order", "bgr"))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        order = self._input_order()
        labelled = self.with_labels and sample.label is not None
        if self.cache is not None:
            image = self.cache.image(index)  # RGB, memory-mapped; the transforms never write into it
            if order == "bgr":
                image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            label = self.cache.label(index) if labelled else None
        else:
            image = load_image(sample.image, order)
            label = load_label(sample) if labelled else None
        return make_item(
            image, label, sample.name, sample.image, sample.label, self.transform, self.keep_original
        )


def seed_transform(transform: Any, seed: int | Sequence[int] | None) -> None:
    """Seed an albumentations pipeline with ONE numpy and ONE python generator shared by all its steps.

    Why not `Compose(seed=...)`: albumentations 2.0.8 gives every step its own generator seeded with the same
    number, so the steps draw identical streams (e.g. a flip decision equal to the first resize draw).
    """
    if seed is None:
        rng, py = np.random.default_rng(), random.Random()
    else:
        seq = np.random.SeedSequence(seed)
        rng, py = np.random.default_rng(seq), random.Random(int(seq.generate_state(1)[0]))
    transform.set_random_state(rng, py)
