"""A synthetic street-scene dataset in Cityscapes' own layout, file names and label ids.

Why: the package must run end to end (train, evaluate, predict, the tests, CI) without the 11 GB
Cityscapes download, and the numbers it prints must mean something. Each scene is a road in perspective
with sidewalks, terrain, building façades, walls, fences, trees, poles with signs and lights, people,
riders and vehicles, drawn as Cityscapes polygons (written to `*_gtFine_polygons.json`) and rasterised the
way cityscapesscripts' `json2labelImg` does (PIL polygons, in file order), so the json, labelIds,
instanceIds and colour PNGs agree. The photo is painted from the same polygons with class-typical
colour ranges, textures, lighting, shadows and noise: a small network has to learn colour *and* texture
statistics, and can reach a meaningful mIoU in minutes on a CPU.

    python -m bisenet_pl.data.synthetic data/synthetic --train 40 --val 10 --test 5 --height 256 --width 512

Everything is drawn from `numpy.random.default_rng([seed, split, index])`: the same arguments give
byte-identical files.

The package: `shapes` (outlines), `scene` (layout), `paint` (the photo and the label maps), `writer`
(files, lock, `ensure_dataset`), `__main__` (the command line).
"""

from bisenet_pl.data.synthetic.paint import render_scene
from bisenet_pl.data.synthetic.writer import CITIES, DEFAULTS, ensure_dataset, make_synthetic_cityscapes

__all__ = ["CITIES", "DEFAULTS", "ensure_dataset", "make_synthetic_cityscapes", "render_scene"]
