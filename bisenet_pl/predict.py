"""`python -m bisenet_pl.predict ckpt=PATH input=FILE|DIR|GLOB [output=DIR] [outputs=[...]]`.

Segments every image (any size) and writes the selected outputs, one sub-folder each:
`color/` palette masks, `overlay/` masks over the image, `trainid/` train-id PNGs, `labelid/` label-id
PNGs named as the Cityscapes test server expects. An unreadable image is reported by name and skipped;
the others are still written, and the command then exits with status 1 and a summary.

A video (`input=clip.mp4`, docs/video.md) gives `<output>/<stem>_overlay.mp4`, optional per-frame masks
(`video.masks=true`) and `<stem>_latency.json`; a video OpenCV cannot read is one error naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bisenet_pl.cli import (
    CONFIG_PATH,
    build_predictor,
    keyword_options,
    print_error,
    quiet_environment,
    readable_errors,
)

quiet_environment()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bisenet_pl.errors import DatasetError  # noqa: E402

log = logging.getLogger("bisenet_pl.predict")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
@readable_errors
def main(cfg: DictConfig) -> None:
    from bisenet_pl.inference.batch import find_images, predict_images
    from bisenet_pl.inference.video import VideoOptions, is_video, predict_video

    predictor = build_predictor(cfg)
    if is_video(cfg.input):
        options = VideoOptions(**keyword_options(cfg.video), opacity=float(cfg.opacity))
        report = predict_video(predictor, cfg.input, Path(cfg.output), options)
        print(report.summary())
        return
    images = find_images(cfg.input)
    if not images:
        raise DatasetError(f"input={cfg.input}: no images found")
    out_dir = Path(cfg.output)
    done, failed = predict_images(predictor, images, out_dir, list(cfg.outputs), float(cfg.opacity))
    log.info("%d images segmented with the %s path; outputs in %s", done, predictor.path_name, out_dir)
    print(f"{done} of {len(images)} images written to {out_dir} ({', '.join(cfg.outputs)})")
    if failed:
        print_error(f"{len(failed)} image(s) could not be read and were skipped:")
        for path, reason in failed:
            print_error(f"  {path}: {reason}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
