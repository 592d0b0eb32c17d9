"""Cityscapes' own pixel-level evaluation (cityscapesscripts), to cross-check our metric.

cityscapesscripts reads label-id PNGs (not train ids), reads its settings from a module-global `args`
at import time, calls `sys.exit` on any problem, and with numpy >= 2.4 crashes in the instance-level
scores (`np.in1d` is gone): we switch those off and turn its exits into a readable error (docs/libraries.md).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bisenet_pl.errors import DatasetError

IMAGE_SUFFIX = "_leftImg8bit.png"


def gt_label_ids_path(image_path: str | Path) -> Path:
    """`leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` -> `gtFine/.../<stem>_gtFine_labelIds.png`."""
    image_path = Path(image_path)
    parts = list(image_path.parts)
    if "leftImg8bit" not in parts or not image_path.name.endswith(IMAGE_SUFFIX):
        raise DatasetError(f"{image_path}: not a Cityscapes leftImg8bit image path")
    idx = len(parts) - 1 - parts[::-1].index("leftImg8bit")
    parts[idx] = "gtFine"
    stem = image_path.name[: -len(IMAGE_SUFFIX)]
    return Path(*parts[:-1]) / f"{stem}_gtFine_labelIds.png"


def official_miou(pairs: Sequence[tuple[Path, str | Path]], out_dir: Path) -> dict[str, Any]:
    """Run `evaluateImgLists` on (prediction label-id PNG, image path) pairs; mIoU in percent."""
    try:
        os.environ.setdefault("CITYSCAPES_DATASET", str(out_dir))
        os.environ.setdefault("CITYSCAPES_EXPORT_DIR", str(out_dir))
        import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as ev
    except ImportError as err:
        raise DatasetError(
            "official=true needs cityscapesscripts: pip install 'bisenet_pl[cityscapes]'"
        ) from err
    preds, gts = [], []
    for pred, image in pairs:
        gt = gt_label_ids_path(image)
        if not gt.is_file():
            raise DatasetError(f"official evaluation needs {gt} (gtFine labelIds) for {image}")
        preds.append(str(pred))
        gts.append(str(gt))
    ev.args.evalInstLevelScore = False
    ev.args.evalPixelAccuracy = False
    ev.args.quiet = True
    ev.args.JSONOutput = False
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            result = ev.evaluateImgLists(preds, gts, ev.args)
    except SystemExit:
        raise DatasetError(
            f"cityscapesscripts rejected the predictions: {log.getvalue().strip()[-500:]}"
        ) from None
    scores = {name: (None if math.isnan(v) else 100.0 * v) for name, v in result["classScores"].items()}
    return {
        "mIoU": 100.0 * float(result["averageScoreClasses"]),
        "IoU": scores,
        "categories_mIoU": 100.0 * float(result["averageScoreCategories"]),
    }


def write_label_id_png(pred: Any, folder: Path, name: str) -> Path:
    """A prediction as Cityscapes label ids (`<city>_<seq>_<frame>*.png`), as the official tools read it."""
    import numpy as np
    from PIL import Image

    from bisenet_pl.data.cityscapes import train_ids_to_label_ids

    city = name.split("_")[0]
    path = folder / city / f"{name}_pred_labelIds.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(train_ids_to_label_ids(pred.to("cpu").numpy().astype(np.uint8))).save(path)
    return path
