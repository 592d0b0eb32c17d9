"""Render the README's pictures from a trained checkpoint (the demo's):

    python scripts/readme_images.py outputs/demo/<run>/checkpoints/last.ckpt

- docs/images/demo_overlay.png: what `python -m bisenet_pl.predict ... outputs=[overlay]` writes for a
  synthetic val image.
- docs/images/wandb_panel.png: the W&B validation panel rendered offline: image, ground-truth mask and
  predicted mask (the masks `WandbPredictions` logs), with the class legend.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bisenet_pl import Predictor
from bisenet_pl.data.cityscapes import CLASSES, PALETTE, CityscapesDataset

ROOT = Path(__file__).resolve().parents[1]


def legend(classes: list[int], width: int) -> np.ndarray:
    row_h, cols = 22, 5
    rows = (len(classes) + cols - 1) // cols
    canvas = np.full((rows * row_h + 8, width, 3), 255, np.uint8)
    cell = width // cols
    for i, c in enumerate(classes):
        x, y = (i % cols) * cell + 6, (i // cols) * row_h + 6
        cv2.rectangle(canvas, (x, y), (x + 14, y + 14), PALETTE[c], -1)
        cv2.putText(
            canvas, CLASSES[c], (x + 20, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA
        )
    return canvas


def title(text: str, width: int) -> np.ndarray:
    bar = np.full((24, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def main(ckpt: str, data_root: str = "data/synthetic_cityscapes", index: int = 0) -> None:
    seg = Predictor(ckpt, device="cpu")
    ds = CityscapesDataset(data_root, "val")
    sample = ds.samples[index]
    rgb = np.asarray(Image.open(sample.image).convert("RGB"))
    label = ds[index]["label"].numpy().astype(np.uint8)
    mask = seg(rgb)
    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(seg.overlay(rgb, mask, 0.5)).save(out / "demo_overlay.png")
    w = rgb.shape[1]
    panels = [
        np.vstack([title("image", w), rgb]),
        np.vstack([title("ground truth", w), seg.overlay(rgb, label, 0.6)]),
        np.vstack([title("prediction", w), seg.overlay(rgb, mask, 0.6)]),
    ]
    grid = np.hstack([np.pad(p, ((0, 0), (2, 2), (0, 0)), constant_values=255) for p in panels])
    present = sorted(set(np.unique(label).tolist()) | set(np.unique(mask).tolist()) - {255})
    header = title(f"val/predictions  ({sample.name})", grid.shape[1])
    Image.fromarray(np.vstack([header, grid, legend([c for c in present if c < 19], grid.shape[1])])).save(
        out / "wandb_panel.png"
    )
    print(f"wrote {out / 'demo_overlay.png'} and {out / 'wandb_panel.png'}")


if __name__ == "__main__":
    main(*sys.argv[1:2], *(sys.argv[2:3]))
