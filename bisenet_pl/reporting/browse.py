"""What the network is fed: N samples of the training pipeline (after augmentation) and of the test pipeline,
each with its label overlaid in the dataset's palette, as one PNG grid each.

Training samples are the first N the training loader yields for the config's seed with `num_workers=0`
(the main-process augmentation stream: `data.seed` seeds both the epoch's shuffle and the transform), so
the grid shows exactly what the first steps of such a run train on. With DataLoader workers each worker
draws its own stream: the same recipe, other draws. Test samples are evenly spaced over the val split.

The grid is drawn with Pillow at the samples' own pixels (no rescaling below `max_tile`), so a tile can be
compared pixel for pixel with `overlay_tile` of the DataModule's own sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CAPTION = 14  # pixels above each tile for its name
GAP = 4
OPACITY = 0.5


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W, 3) RGB uint8, what the network sees (denormalised)
    label: np.ndarray  # (H, W) uint8 class ids, the ignore index kept


def _to_sample(image: Any, label: Any, name: str) -> Sample:
    from bisenet_pl.data.preprocess import denormalize

    return Sample(name, denormalize(image), label.numpy().astype(np.uint8))


def training_samples(datamodule: Any, count: int) -> list[Sample]:
    """The first `count` samples of the training loader, in the main process (workers' streams differ)."""
    datamodule.num_workers = 0
    datamodule.setup("fit")
    samples: list[Sample] = []
    for batch in datamodule.train_dataloader():
        for i in range(batch["image"].shape[0]):
            samples.append(_to_sample(batch["image"][i], batch["label"][i], str(batch["name"][i])))
            if len(samples) == count:
                return samples
    return samples


def test_samples(datamodule: Any, count: int) -> list[Sample]:
    """`count` val images evenly spaced over the split, through the test pipeline: the image at the network's
    input size, the label (kept at full resolution by the pipeline) resized to it (nearest)."""
    import cv2

    from bisenet_pl.data.transforms import build_test_transform
    from bisenet_pl.reporting.samples import fixed_indices

    split = getattr(datamodule, "val_split", "val")
    dataset = datamodule.make_dataset(split, build_test_transform(tuple(datamodule.test_scale)), False, True)
    samples = []
    for index in fixed_indices(len(dataset), count):
        item = dataset[index]
        sample = _to_sample(item["image"], item["label"], str(item.get("name", index)))
        h, w = sample.image.shape[:2]
        if sample.label.shape != (h, w):
            sample.label = cv2.resize(sample.label, (w, h), interpolation=cv2.INTER_NEAREST)
        samples.append(sample)
    return samples


def overlay_tile(sample: Sample, palette: Sequence[Sequence[int]], ignore_index: int) -> np.ndarray:
    """The picture of one sample: its label's colours blended over the image; ignored pixels show the
    image only."""
    from bisenet_pl.inference.visualize import colorize

    colour = colorize(sample.label, palette).astype(np.float32)
    out = sample.image.astype(np.float32)
    keep = sample.label != ignore_index
    out[keep] = (1.0 - OPACITY) * out[keep] + OPACITY * colour[keep]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def tile_origin(index: int, tile: tuple[int, int], columns: int) -> tuple[int, int]:
    """(x, y) of tile `index`'s top-left pixel in the grid; `tile` = (height, width) of the largest tile."""
    row, col = divmod(index, columns)
    return GAP + col * (tile[1] + GAP), GAP + CAPTION + row * (tile[0] + CAPTION + GAP)


def grid(
    samples: Sequence[Sample],
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    ignore_index: int,
    columns: int = 4,
    title: str = "",
) -> Any:
    """A Pillow image: the tiles (name above each), then a legend of the classes present."""
    from PIL import Image, ImageDraw

    if not samples:
        raise ValueError("no samples to draw")
    columns = max(1, min(columns, len(samples)))
    tile = (max(s.image.shape[0] for s in samples), max(s.image.shape[1] for s in samples))
    rows = -(-len(samples) // columns)
    present = sorted({int(v) for s in samples for v in np.unique(s.label) if v != ignore_index})
    legend_rows = -(-len(present) // 4) if present else 0
    width = max(GAP + columns * (tile[1] + GAP), 4 * 150 + GAP)
    height = GAP + rows * (tile[0] + CAPTION + GAP) + 18 + legend_rows * 16 + GAP
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, sample in enumerate(samples):
        x, y = tile_origin(i, tile, columns)
        canvas.paste(Image.fromarray(overlay_tile(sample, palette, ignore_index)), (x, y))
        draw.text((x, y - CAPTION + 1), sample.name[: max(8, tile[1] // 6)], fill=(0, 0, 0))
    y0 = GAP + rows * (tile[0] + CAPTION + GAP)
    draw.text((GAP, y0), title or "labels overlaid (ignored pixels: the image only)", fill=(0, 0, 0))
    for k, cls in enumerate(present):
        x = GAP + (k % 4) * 150
        y = y0 + 18 + (k // 4) * 16
        colour = tuple(int(c) for c in palette[cls]) if cls < len(palette) else (0, 0, 0)
        draw.rectangle((x, y, x + 12, y + 12), fill=colour, outline=(0, 0, 0))
        name = class_names[cls] if cls < len(class_names) else str(cls)
        draw.text((x + 16, y), f"{cls} {name}"[:22], fill=(0, 0, 0))
    return canvas


def shrink(sample: Sample, max_side: int) -> Sample:
    """The sample scaled so its long side is at most `max_side` (image: area, label: nearest)."""
    import cv2

    h, w = sample.label.shape
    factor = max_side / max(h, w)
    if factor >= 1:
        return sample
    size = (max(1, int(w * factor + 0.5)), max(1, int(h * factor + 0.5)))
    return Sample(
        sample.name,
        cv2.resize(sample.image, size, interpolation=cv2.INTER_AREA),
        cv2.resize(sample.label, size, interpolation=cv2.INTER_NEAREST),
    )


def datamodule_for(data: str, options: dict[str, Any], seed: int) -> Any:
    """The DataModule `train data=<data> data.<key>=<value>` builds: Cityscapes (the synthetic set generated
    into its default root only, as the config does) or a folder dataset with its preset."""
    from pathlib import Path

    options = {**options, "seed": seed}
    if data == "cityscapes":
        from bisenet_pl.data.cityscapes_datamodule import CityscapesDataModule

        default = Path("data") / "synthetic_cityscapes"
        options.setdefault("root", default)
        options.setdefault("synthetic_root", default)
        return CityscapesDataModule(**options)
    from bisenet_pl.data.folder_datamodule import FolderDataModule
    from bisenet_pl.errors import DatasetError

    if "root" not in options:
        raise DatasetError(f"data={data} needs its folder: add data.root=<folder>")
    return FolderDataModule(preset=data, **options)
