"""A video in, an overlay video out: what `python -m bisenet_pl.predict input=clip.mp4` runs.

Frames are decoded by OpenCV, prepared exactly as an image is (the predictor's own step: the same resize
into the test scale and the same normalisation), and segmented `batch_size` frames per call of the
predictor's net, whichever backend built it. A batch is one tensor through the one inference path
(`modes.predict_labels`), so a frame's mask is the one `Predictor` gives for that frame alone; only the
float summation order of a batched convolution differs (logits within ~1e-5), see docs/video.md.

Outputs, in `out_dir`: `<stem>_overlay.mp4` (the masks blended over the frames; the input's fps and
size), optionally `<stem>_masks/000000.png` (train ids) and `<stem>_color/000000.png` (palette
pictures), and `<stem>_latency.json` (per-frame latency percentiles and the throughput).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from bisenet_pl.errors import BisenetError, ConfigError, DatasetError
from bisenet_pl.inference.latency import latency_ms
from bisenet_pl.inference.modes import predict_labels

if TYPE_CHECKING:
    from bisenet_pl.inference.predictor import Predictor

log = logging.getLogger(__name__)

#: Containers `input=` is read as a video for; OpenCV's FFmpeg backend decodes each of them.
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
#: Per-frame PNGs: `trainid` -> `<stem>_masks/`, `color` -> `<stem>_color/`.
MASK_KINDS = {"trainid": "masks", "color": "color"}
#: A codec OpenCV's VideoWriter has in every pip wheel (MPEG-4 Part 2); H.264 encoders often are not.
DEFAULT_FOURCC = "mp4v"
#: The frame rate written when a container does not state one.
FALLBACK_FPS = 25.0


def is_video(path: str | Path) -> bool:
    """Whether `input=` names a video: by its extension, so a missing `clip.mp4` is reported as a video."""
    return Path(str(path)).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoOptions:
    """What the `video.*` keys of predict choose.

    Args:
        batch_size: frames per call of the net (one tensor); 1 gives the pure per-frame latency.
        masks: per-frame PNGs to write besides the overlay video: True (= ["trainid"]), False, or a list
            of `MASK_KINDS`.
        max_frames: stop after this many frames (None: the whole video).
        opacity: the masks' weight in the overlay.
        fourcc: the overlay video's codec, as OpenCV's VideoWriter names it.
        progress: show a progress bar; None: only on a terminal.
    """

    batch_size: int = 4
    masks: bool | Sequence[str] = False
    max_frames: int | None = None
    opacity: float = 0.5
    fourcc: str = DEFAULT_FOURCC
    progress: bool | None = None
    mask_kinds: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"video.batch_size={self.batch_size!r}: give a whole number of frames >= 1")
        if self.max_frames is not None and (not isinstance(self.max_frames, int) or self.max_frames < 1):
            raise ConfigError(f"video.max_frames={self.max_frames!r}: give a number of frames >= 1, or null")
        if isinstance(self.masks, bool):
            kinds: tuple[str, ...] = ("trainid",) if self.masks else ()
        elif isinstance(self.masks, str):
            kinds = (self.masks,)
        else:
            kinds = tuple(str(k) for k in self.masks)
        unknown = sorted(set(kinds) - set(MASK_KINDS))
        if unknown:
            raise ConfigError(
                f"video.masks={list(kinds)}: choose true, false or a list of {', '.join(MASK_KINDS)}"
            )
        self.mask_kinds = kinds
        if len(self.fourcc) != 4:
            raise ConfigError(f"video.fourcc={self.fourcc!r}: a codec is four characters, e.g. mp4v or MJPG")
        if not 0.0 <= float(self.opacity) <= 1.0:
            raise ConfigError(f"opacity={self.opacity}: choose a value in [0, 1]")


class VideoReader:
    """The frames of a video file as RGB uint8 arrays, with the container's fps, size and frame count.

    A file OpenCV cannot open, or one of which not even the first frame decodes, is a `DatasetError`
    naming it: decoding is the only way to know a container is usable, so the first frame is read here.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such video file")
        # FFmpeg prints its own complaint ("moov atom not found") before our one line says the same.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        self._capture = cv2.VideoCapture(str(self.path))
        first_ok, first = self._capture.read() if self._capture.isOpened() else (False, None)
        if not first_ok or first is None:
            self._capture.release()
            kind = "an empty file" if self.path.stat().st_size == 0 else "not a video it can decode"
            raise DatasetError(
                f"{self.path}: OpenCV cannot read a frame of this video ({kind}: corrupt, truncated, or a "
                "codec this OpenCV build lacks)"
            )
        self._first: np.ndarray | None = first
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if math.isfinite(fps) and fps > 0 else FALLBACK_FPS
        if self.fps != fps:
            log.warning(
                "%s states no frame rate: the overlay video is written at %g fps", self.path, self.fps
            )
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        #: The container's frame count (an estimate for some containers; None where it states none).
        self.frame_count: int | None = count if count > 0 else None

    def __iter__(self) -> Iterator[np.ndarray]:
        """Each frame once, as RGB uint8 (H, W, 3), until the stream ends or stops decoding."""
        if self._first is not None:
            first, self._first = self._first, None
            yield np.ascontiguousarray(first[..., ::-1])
        index = 1
        while True:
            ok, bgr = self._capture.read()
            if not ok or bgr is None:
                return
            if bgr.shape[:2] != (self.height, self.width):  # one overlay video has one frame size
                raise DatasetError(
                    f"{self.path}: frame {index} is {bgr.shape[0]}x{bgr.shape[1]}, the first was "
                    f"{self.height}x{self.width}; a video whose frame size changes is not supported"
                )
            index += 1
            yield np.ascontiguousarray(bgr[..., ::-1])

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frames(path: str | Path, max_frames: int | None = None) -> list[np.ndarray]:
    """The decoded RGB frames of a video (the first `max_frames`): what the predict command segments."""
    with VideoReader(path) as reader:
        frames = []
        for frame in reader:
            frames.append(frame)
            if max_frames is not None and len(frames) >= max_frames:
                break
        return frames


def segment_frames(predictor: Predictor, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The train-id maps (H, W) uint8 of same-sized RGB frames, through the predictor's net as one batch.

    Each frame is prepared by the predictor's own per-image step (`Predictor._prepare`: the test-scale
    resize, and the normalisation, or the pixels themselves for a graph that normalises inside), and the
    batch takes `Predictor.__call__`'s path (config, fast argmax, device), so nothing here can drift from
    what a single image gets.
    """
    if not frames:
        return []
    prepared = [predictor._prepare(frame) for frame in frames]
    x = torch.cat([p[0] for p in prepared])
    original = torch.cat([p[2] for p in prepared])
    size = prepared[0][1]
    labels = predict_labels(
        predictor.net, x, size, predictor.cfg, fast_argmax=predictor.fast, original=original
    )
    return list(labels.to(torch.uint8).cpu().numpy())


@dataclass
class VideoReport:
    """What one video run did and how fast: written as `<stem>_latency.json`, printed at the end.

    `latency_ms` is per frame, from the moment the frame was decoded to the moment its overlay frame
    (and masks) were written: it includes waiting for the rest of its batch. `fps` is frames over the
    whole loop's wall time (decoding, inference, drawing and encoding).
    """

    video: str
    overlay: str
    frames: int
    height: int
    width: int
    input_fps: float
    batch_size: int
    backend: str
    path: str
    device: str
    seconds: float
    fps: float
    latency_ms: dict[str, float]
    masks: dict[str, str]

    def summary(self) -> str:
        lat = self.latency_ms
        return (
            f"{self.frames} frames ({self.height}x{self.width}) of {self.video} -> {self.overlay}: "
            f"{self.fps:.2f} fps; latency p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, "
            f"p99 {lat['p99']:.1f} ms, mean {lat['mean']:.1f} ms "
            f"({self.backend}, {self.path}, {self.device}, batch {self.batch_size})"
        )


def _writable_dir(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the path, a read-only mount: one line, not the OSError's traceback
        raise BisenetError(
            f"cannot write {folder}: {err.strerror or err}. Choose another output= folder"
        ) from None
    return folder


def _save_png(picture: np.ndarray, target: Path) -> None:
    from PIL import Image

    try:
        Image.fromarray(np.ascontiguousarray(picture)).save(target)
    except OSError as err:
        raise BisenetError(
            f"cannot write {target}: {err.strerror or err}. Choose another output= folder"
        ) from None


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[tuple[list[np.ndarray], list[float]]]:
    """Consecutive lists of `size` frames (the last one shorter), each with the moments they were decoded."""
    batch: list[np.ndarray] = []
    decoded_at: list[float] = []
    for frame in frames:
        batch.append(frame)
        decoded_at.append(time.perf_counter())
        if len(batch) == size:
            yield batch, decoded_at
            batch, decoded_at = [], []
    if batch:
        yield batch, decoded_at


def _progress(enabled: bool | None) -> Any:
    """A rich progress bar with the running frame rate; disabled (silent) when not on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    show = console.is_terminal if enabled is None else enabled
    columns = (
        TextColumn("[bold]video"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[fps]}"),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=console, disable=not show)


def predict_video(
    predictor: Predictor, path: str | Path, out_dir: str | Path, options: VideoOptions | None = None
) -> VideoReport:
    """Segment every frame of the video at `path` (up to `options.max_frames`) and write the outputs.

    The input is opened first, so a file that is not a readable video fails before anything is written.
    """
    options = options or VideoOptions()
    reader = VideoReader(path)
    try:
        return _run(predictor, reader, Path(out_dir), options)
    finally:
        reader.close()


def _run(predictor: Predictor, reader: VideoReader, out_dir: Path, options: VideoOptions) -> VideoReport:
    stem = reader.path.stem
    _writable_dir(out_dir)
    mask_dirs = {kind: _writable_dir(out_dir / f"{stem}_{MASK_KINDS[kind]}") for kind in options.mask_kinds}
    overlay_path = out_dir / f"{stem}_overlay.mp4"
    writer = cv2.VideoWriter(
        str(overlay_path), cv2.VideoWriter.fourcc(*options.fourcc), reader.fps, (reader.width, reader.height)
    )
    if not writer.isOpened():
        raise BisenetError(
            f"cannot write {overlay_path}: OpenCV's VideoWriter has no {options.fourcc!r} encoder for it, or "
            "the folder is not writable. Choose another output= folder or video.fourcc (mp4v works here)"
        )
    total = reader.frame_count
    if options.max_frames is not None:
        total = min(total, options.max_frames) if total is not None else options.max_frames
    latencies: list[float] = []
    progress = _progress(options.progress)
    start = time.perf_counter()
    try:
        with progress:
            task = progress.add_task("video", total=total, fps="")
            for batch, decoded_at in _batches(
                itertools.islice(reader, options.max_frames), options.batch_size
            ):
                masks = segment_frames(predictor, batch)
                for rgb, mask, decoded in zip(batch, masks, decoded_at, strict=True):
                    index = len(latencies)
                    picture = predictor.overlay(rgb, mask, options.opacity)
                    writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                    for kind, folder in mask_dirs.items():
                        _save_png(
                            mask if kind == "trainid" else predictor.colorize(mask),
                            folder / f"{index:06d}.png",
                        )
                    latencies.append(time.perf_counter() - decoded)
                now = time.perf_counter()
                progress.update(task, advance=len(batch), fps=f"{len(latencies) / (now - start):.2f} fps")
    finally:
        writer.release()
    seconds = time.perf_counter() - start
    report = VideoReport(
        video=str(reader.path),
        overlay=str(overlay_path),
        frames=len(latencies),
        height=reader.height,
        width=reader.width,
        input_fps=reader.fps,
        batch_size=options.batch_size,
        backend=str(getattr(predictor, "backend", "torch")),
        path=predictor.path_name,
        device=str(predictor.device),
        seconds=seconds,
        fps=len(latencies) / seconds if seconds > 0 else float("nan"),
        latency_ms=latency_ms(latencies),
        masks={kind: str(folder) for kind, folder in mask_dirs.items()},
    )
    latency_path = out_dir / f"{stem}_latency.json"
    try:
        latency_path.write_text(json.dumps(asdict(report), indent=2) + "\n")
    except OSError as err:
        raise BisenetError(f"cannot write {latency_path}: {err.strerror or err}") from None
    return report


__all__ = [
    "DEFAULT_FOURCC",
    "MASK_KINDS",
    "VIDEO_EXTENSIONS",
    "VideoOptions",
    "VideoReader",
    "VideoReport",
    "is_video",
    "predict_video",
    "read_frames",
    "segment_frames",
]
