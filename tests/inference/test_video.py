"""Video in `predict`: `python -m bisenet_pl.predict ckpt=... input=clip.mp4` and its library,
`bisenet_pl.inference.video`. Every number is checked against what `Predictor` gives for each frame
alone, on frames decoded by OpenCV from the input file (the codec is lossy: the arrays written are not
the arrays read back)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _shared import randomize_bn
from PIL import Image

from bisenet_pl.checkpoints import save_checkpoint
from bisenet_pl.data.synthetic.paint import render_scene
from bisenet_pl.deploy.contract import FP32_TOLERANCE
from bisenet_pl.errors import BisenetError, DatasetError
from bisenet_pl.inference.backends import BACKENDS
from bisenet_pl.inference.predictor import Predictor
from bisenet_pl.inference.video import VideoOptions, is_video, predict_video
from bisenet_pl.models import Segmentor

HEIGHT, WIDTH, FPS, FRAMES = 96, 192, 10.0, 8

#: Many small tensor ops: one intra-op thread keeps a busy 2-core box from oversubscribing.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_clip(path: Path, frames: int = FRAMES, fps: float = FPS) -> Path:
    """A short mp4v clip of synthetic street scenes, each frame a new scene drifting right."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        rgb = np.roll(render_scene(100 + i, HEIGHT, WIDTH)["image"], 6 * i, axis=1)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decode(path: Path) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    """Every frame of a video as RGB, read with OpenCV directly (not through the code under test)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps, frames[0].shape[:2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A small random model whose classes vary over a scene (BN statistics and classifier randomised)."""
    torch.manual_seed(0)
    model = Segmentor(aux_heads=False, decode_channels=128)
    randomize_bn(model)
    # test_scale = the frame size: no resize, the masks are the network's own at that size
    return save_checkpoint(
        model, tmp_path_factory.mktemp("video") / "model.pt", {"test_scale": [WIDTH, HEIGHT]}
    )


@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return Predictor(ckpt, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "street.mp4")


def read_masks(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))]


def test_a_batch_of_one_gives_exactly_the_single_image_masks(predictor, clip, tmp_path):
    report = predict_video(predictor, clip, tmp_path, VideoOptions(batch_size=1, masks=True, max_frames=5))
    frames, _, _ = decode(clip)
    masks = read_masks(tmp_path / "street_masks")
    assert report.frames == len(masks) == len(decode(tmp_path / "street_overlay.mp4")[0]) == 5
    assert json.loads((tmp_path / "street_latency.json").read_text())["frames"] == 5
    singles = [predictor(frame) for frame in frames[:5]]
    assert len({m.tobytes() for m in singles}) == 5  # the scenes differ, so do their masks
    for written, single in zip(masks, singles, strict=True):
        assert written.dtype == np.uint8 and np.array_equal(written, single)


def test_batched_frames_are_segmented_as_single_images_and_drawn_into_the_video(predictor, clip, tmp_path):
    out = tmp_path / "out"
    report = predict_video(predictor, clip, out, VideoOptions(batch_size=3, masks=["trainid", "color"]))
    frames, _, _ = decode(clip)
    assert len(frames) == FRAMES and report.frames == FRAMES  # batches of 3, 3 and 2
    masks = read_masks(out / "street_masks")
    assert len(masks) == FRAMES and not (out / "street_masks" / f"{FRAMES:06d}.png").exists()
    for frame, mask, colour in zip(frames, masks, read_masks(out / "street_color"), strict=True):
        assert np.array_equal(colour, predictor.colorize(mask))
        # A batched convolution sums in another order than a single image's (logits ~1e-6 apart), so a
        # pixel may take the other class only where the single image's two best classes are that close.
        assert near_ties_only(mask, predictor.scores(frame)[0])

    overlays, fps, size = decode(out / "street_overlay.mp4")
    assert len(overlays) == FRAMES and fps == pytest.approx(FPS) and size == (HEIGHT, WIDTH)
    expected = [predictor.overlay(frame, mask, 0.5) for frame, mask in zip(frames, masks, strict=True)]
    # The overlay video is lossy (MPEG-4 part 2). Its encoder is deterministic, so the expected overlays
    # encoded the same way decode to exactly the frames of the command's video...
    reference = tmp_path / "reference.mp4"
    writer = cv2.VideoWriter(str(reference), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for picture in expected:
        writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    writer.release()
    for got, want in zip(overlays, decode(reference)[0], strict=True):
        assert np.array_equal(got, want)
    # ... and, without that assumption, each decoded overlay is within the codec's error of the computed
    # one (3.2 grey levels mean seen here; 8 allowed) and far from the frame without the masks (~40).
    for got, want, frame in zip(overlays, expected, frames, strict=True):
        assert np.abs(got.astype(int) - want).mean() < 8 < 20 < np.abs(got.astype(int) - frame).mean()

    record = json.loads((out / "street_latency.json").read_text())
    assert record["frames"] == FRAMES and record["batch_size"] == 3 and record["fps"] > 0
    lat = record["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["mean"] > 0
    assert record["backend"] == "torch" and record["path"] == predictor.path_name
    assert (record["height"], record["width"], record["input_fps"]) == (HEIGHT, WIDTH, FPS)


def near_ties_only(mask: np.ndarray, scores: torch.Tensor) -> bool:
    """Whether `mask` differs from the argmax of a single image's `scores` (C, H, W) only at near-ties."""
    top2 = scores.topk(2, dim=0).values
    changed = mask != scores.argmax(0).numpy()
    return bool(
        changed.mean() < 1e-3 and (top2[0] - top2[1]).numpy()[changed].max(initial=0.0) < FP32_TOLERANCE
    )


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_every_backend_segments_the_video_as_it_segments_single_images(backend, ckpt, clip, tmp_path):
    predictor = Predictor(ckpt, device="cpu", backend=backend)
    report = predict_video(predictor, clip, tmp_path, VideoOptions(batch_size=2, masks=True, max_frames=4))
    record = json.loads((tmp_path / "street_latency.json").read_text())
    assert report.frames == record["frames"] == 4 and record["backend"] == backend
    assert len(decode(tmp_path / "street_overlay.mp4")[0]) == 4
    frames = decode(clip)[0][:4]
    for frame, mask in zip(frames, read_masks(tmp_path / "street_masks"), strict=True):
        assert near_ties_only(mask, predictor.scores(frame)[0])


def test_a_baked_export_uint8_in_labels_out_segments_the_video(predictor, ckpt, clip, tmp_path):
    from bisenet_pl.checkpoints import load_model
    from bisenet_pl.deploy.contract import GraphContract
    from bisenet_pl.deploy.export.onnx import export_onnx

    model = load_model(ckpt)
    baked = export_onnx(model, tmp_path / "baked.onnx", model.meta, "torchscript",
                        contract=GraphContract.from_options(preprocess=True, argmax=True))  # fmt: skip
    on_baked = Predictor(baked, device="cpu", backend="onnxruntime")
    assert getattr(on_baked.net, "takes_uint8", False)  # the predictor feeds it pixels, not floats
    report = predict_video(on_baked, clip, tmp_path / "out", VideoOptions(batch_size=3, masks=True))
    assert report.frames == FRAMES
    # the graph's class maps, batched, are the PyTorch model's single-image masks up to near-ties
    for frame, mask in zip(decode(clip)[0], read_masks(tmp_path / "out" / "street_masks"), strict=True):
        assert near_ties_only(mask, predictor.scores(frame)[0])


def test_a_file_that_is_not_a_video_is_one_error_naming_it(predictor, tmp_path):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    for bad, words in ((noise, "not a video it can decode"), (empty, "an empty file")):
        with pytest.raises(DatasetError, match=words) as err:
            predict_video(predictor, bad, tmp_path / "out")
        assert str(bad) in str(err.value)
    with pytest.raises(DatasetError, match="no such video file"):
        predict_video(predictor, tmp_path / "missing.mkv", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing is written for an unreadable input


def test_an_output_folder_that_cannot_be_written_is_one_error(predictor, clip, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # root ignores permissions; a file in the path stops everyone
    with pytest.raises(BisenetError, match="cannot write .*Choose another output= folder"):
        predict_video(predictor, clip, blocker / "out")


def test_options_are_checked_by_name():
    assert is_video("a/clip.MP4") and is_video("x.webm") and not is_video("frame.png")
    assert VideoOptions(masks=True).mask_kinds == ("trainid",) and VideoOptions().mask_kinds == ()
    refused = {"batch_size": 0, "masks": ["depth"], "max_frames": 0, "fourcc": "h264x"}
    for key, value in refused.items():
        with pytest.raises(BisenetError, match=f"video.{key}"):
            VideoOptions(**{key: value})


def test_predict_cli_on_a_clip_and_on_a_broken_one(run_cli, ckpt, clip, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("bisenet_pl.predict", f"ckpt={ckpt}", f"input={clip}", f"output={out}", "video.masks=true",
                   "video.batch_size=2", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{FRAMES} frames ({HEIGHT}x{WIDTH})" in proc.stdout and "fps; latency p50" in proc.stdout
    assert "━" not in proc.stdout + proc.stderr  # no progress bar when not on a terminal
    assert len(decode(out / "street_overlay.mp4")[0]) == FRAMES
    assert len(list((out / "street_masks").glob("*.png"))) == FRAMES
    record = json.loads((out / "street_latency.json").read_text())
    assert record["frames"] == FRAMES and record["fps"] > 0 and record["batch_size"] == 2

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:300])  # the header of a real clip, then nothing
    proc = run_cli("bisenet_pl.predict", f"ckpt={ckpt}", f"input={broken}", f"output={tmp_path / 'o2'}",
                   "device=cpu", f"hydra.run.dir={tmp_path / 'run2'}")  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert str(broken) in proc.stderr and "OpenCV cannot read a frame" in proc.stderr
    assert "Traceback" not in proc.stderr and "moov atom" not in proc.stderr  # ours, not FFmpeg's
