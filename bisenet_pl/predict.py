"""`python -m bisenet_pl.predict ckpt=PATH input=FILE|DIR|GLOB [output=DIR] [outputs=[...]]`.

Segments every image (any size) and writes the selected outputs, one sub-folder each:
`color/` palette masks, `overlay/` masks over the image, `trainid/` train-id PNGs, `labelid/` label-id
PNGs named as the Cityscapes test server expects. An unreadable image is reported by name and skipped;
the others are still written, and the command then exits with status 1 and a summary.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable
from pathlib import Path

from bisenet_pl.cli import print_error, quiet_environment, readable_errors

quiet_environment()

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from bisenet_pl.errors import BisenetError, DatasetError  # noqa: E402

log = logging.getLogger("bisenet_pl.predict")

OUTPUT_KINDS = ("color", "overlay", "trainid", "labelid")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def find_images(spec: str | Path) -> list[tuple[Path, Path]]:
    """(image path, output-relative path) for a file, a folder (recursive) or a glob pattern."""
    spec_path = Path(spec).expanduser()
    if spec_path.is_file():
        return [(spec_path, Path(spec_path.name))]
    if spec_path.is_dir():
        files = sorted(
            p for p in spec_path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        return [(p, p.relative_to(spec_path)) for p in files]
    matches = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
    if not matches and not any(ch in str(spec) for ch in "*?["):
        raise DatasetError(f"input={spec}: no such file or folder")
    return [(p, Path(p.name)) for p in matches]


def output_stem(rel: Path) -> Path:
    """`<city>_<seq>_<frame>_leftImg8bit.png` -> `<city>_<seq>_<frame>`, keeping sub-folders."""
    name = rel.name
    for suffix in ("_leftImg8bit.png",):
        if name.endswith(suffix):
            return rel.with_name(name[: -len(suffix)])
    return rel.with_suffix("")


def predict_images(
    segmenter,
    images: Iterable[tuple[Path, Path]],
    out_dir: Path,
    outputs: Iterable[str],
    opacity: float = 0.5,
) -> tuple[int, list[tuple[Path, str]]]:
    """Write the outputs for each image; returns (images written, [(failed image, reason)])."""
    import numpy as np
    from PIL import Image
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bisenet_pl.data.cityscapes import train_ids_to_label_ids
    from bisenet_pl.segmenter import read_rgb

    outputs = list(outputs)
    unknown = sorted(set(outputs) - set(OUTPUT_KINDS))
    if unknown or not outputs:
        raise BisenetError(f"outputs={outputs}: choose from {', '.join(OUTPUT_KINDS)}")
    images = list(images)
    done, failed = 0, []
    columns = (TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("predict", total=len(images))
        for path, rel in images:
            try:
                rgb = read_rgb(path)
            except DatasetError as err:
                failed.append((path, str(err)))
                progress.console.print(f"[yellow]skipped[/] {path}: cannot decode the image")
                progress.advance(task)
                continue
            mask = segmenter(rgb)
            stem = output_stem(rel)
            for kind in outputs:
                if kind == "color":
                    picture = segmenter.colorize(mask)
                elif kind == "overlay":
                    picture = segmenter.overlay(rgb, mask, opacity)
                elif kind == "trainid":
                    picture = mask
                else:
                    picture = train_ids_to_label_ids(mask)
                target = out_dir / kind / stem.with_suffix(".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(picture)).save(target)
            done += 1
            progress.advance(task)
    return done, failed


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
@readable_errors
def main(cfg: DictConfig) -> None:
    from bisenet_pl.segmenter import Segmenter

    test_scale = cfg.test_scale if cfg.test_scale in ("checkpoint", None) else tuple(cfg.test_scale)
    segmenter = Segmenter(
        cfg.ckpt,
        device=cfg.device,
        mode=cfg.mode,
        fast=cfg.fast,
        test_scale=test_scale,
        **{k: v for k, v in OmegaConf.to_container(cfg.inference).items() if v is not None},
    )
    images = find_images(cfg.input)
    if not images:
        raise DatasetError(f"input={cfg.input}: no images found")
    out_dir = Path(cfg.output)
    done, failed = predict_images(segmenter, images, out_dir, list(cfg.outputs), float(cfg.opacity))
    log.info("%d images segmented with the %s path; outputs in %s", done, segmenter.path_name, out_dir)
    print(f"{done} of {len(images)} images written to {out_dir} ({', '.join(cfg.outputs)})")
    if failed:
        print_error(f"{len(failed)} image(s) could not be read and were skipped:")
        for path, reason in failed:
            print_error(f"  {path}: {reason}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
