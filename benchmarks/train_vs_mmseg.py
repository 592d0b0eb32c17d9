"""Time to train, against mmsegmentation 1.2.2 in the same run: the data pipeline per core (from the
PNGs and from the decoded-frame cache) and the training step.

    python benchmarks/train_vs_mmseg.py [--core N] [--frames 6] [--rounds 7] [--iters 6] [--json]

mmseg runs in its own process in the parity venv (`make parity-env`; `benchmarks/_mmseg_worker.py`),
ours in this one; both are pinned to the same core, one torch thread, single-threaded OpenCV (as in a
DataLoader worker), and take turns: nothing of one runs while the other is timed, and a burst of another
job on the machine hits both sides of the same round.

Data: full-size synthetic 2048x1024 frames in Cityscapes' layout, with the `_gtFine_labelTrainIds.png`
that mmseg's converter writes (both sides read the same files). mmseg: its config's training dataset
(`train_dataloader.dataset`: LoadImageFromFile, LoadAnnotations, RandomResize, RandomCrop 1024x1024,
RandomFlip, PhotoMetricDistortion, PackSegInputs), one item per frame, as a DataLoader worker does.
Ours: `CityscapesDataModule`'s train dataset (the same recipe, plus normalising and padding, which mmseg
does later in its model's data preprocessor: work mmseg's side does not pay here), from the PNGs and
from the cache (`data.cache`). A round is one pass over the frames per side; ratio = mmseg's time /
ours, median over rounds.

Step: batch 2 of 512x512, the Lightning `SegmentationModule` (5 heads: decode + 4 aux, mmseg's CE,
SGD 0.9/5e-4, warm-up x poly) in `Trainer.fit`, against mmseg's `model.train_step` (data preprocessor,
the same network and losses, its OptimWrapper's SGD): one mmseg step runs inside each of our steps'
`on_train_batch_end` and is subtracted from ours. Ours runs twice: as configured by default
(channels_last, foreach SGD, the fused loss) and as mmseg runs (NCHW, per-parameter SGD, the loss through
the ops mmseg calls: `MultiHeadLoss(impl="mmseg")`). Ratio = ours / mmseg
(lower is faster), median of the per-iteration ratios.

Writes `experiments/bench_train.json` and `experiments/bench_train.md` (portable paths only).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bisenet_pl.data import png  # noqa: E402
from bisenet_pl.hardware import machine_info  # noqa: E402
from bisenet_pl.speed.timing import command_line  # noqa: E402

WORKER = REPO / "benchmarks" / "_mmseg_worker.py"
DEFAULT_PARITY_VENV = REPO / ".parity-venv"
MMSEG_LIKE = {"channels_last": False, "optimizer_impl": "loop"}
MMSEG_LIKE_LOSS = {"impl": "mmseg"}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


class Mmseg:
    """The mmseg worker process, one JSON request and reply at a time."""

    def __init__(self, python: Path, core: int, threads: int) -> None:
        env = dict(os.environ, BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(core), str(python), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"the mmseg worker stopped (status {self.proc.wait()})")
            line = line.strip()
            if line.startswith("{"):
                reply = json.loads(line)
                if "error" in reply:
                    raise SystemExit(f"the mmseg worker failed: {reply['error']}")
                return reply

    def __call__(self, cmd: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:  # "quit" has no reply
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait(timeout=60)


# ---- data --------------------------------------------------------------------------------------------
def make_frames(root: Path, n: int) -> Path:
    """`n` full-size synthetic frames with mmseg's `_gtFine_labelTrainIds.png` beside the labelIds."""
    from bisenet_pl.data.cityscapes import LABEL_ID_TO_TRAIN_ID
    from bisenet_pl.data.synthetic import make_synthetic_cityscapes

    make_synthetic_cityscapes(root, n_train=n, n_val=0, n_test=0, height=1024, width=2048, seed=0)
    for label_ids in sorted((root / "gtFine" / "train").rglob("*_gtFine_labelIds.png")):
        ids = cv2.imread(str(label_ids), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(label_ids).replace("_labelIds.png", "_labelTrainIds.png"), LABEL_ID_TO_TRAIN_ID[ids])
    return root


def _our_dataset(root: Path, cache: Path | None) -> Any:
    from bisenet_pl.data.cityscapes_datamodule import CityscapesDataModule

    dm = CityscapesDataModule(root, num_workers=0, generate_if_missing=False, cache=cache, seed=0)
    return dm.make_dataset("train", dm._train_transform(), False, True)  # what setup("fit") trains on


def bench_data(mmseg: Mmseg, frames: int, rounds: int) -> dict[str, Any]:
    from bisenet_pl.data.cache import write_split

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        root = make_frames(tmp / "cs", frames)
        lines: list[str] = []
        write_split(root, tmp / "cache", "train", echo=lines.append)
        cache_line = lines[0].replace(str(tmp), "<tmp>")
        info = mmseg("data", root=str(root))
        ours = {"pngs": _our_dataset(root, None), "cache": _our_dataset(root, tmp / "cache")}
        assert all(s.label_kind == "trainIds" for s in ours["pngs"].samples)  # the files mmseg reads

        def our_pass(dataset: Any) -> float:
            start = time.perf_counter()
            for i in range(len(dataset)):
                dataset[i]
            return time.perf_counter() - start

        for dataset in ours.values():  # warm-up (imports, first allocations)
            our_pass(dataset)
        mmseg("data_pass")
        times: dict[str, list[float]] = {"mmseg": [], "pngs": [], "cache": []}
        order = ["mmseg", "pngs", "cache"]
        for r in range(rounds):
            for side in order[r % 3 :] + order[: r % 3]:  # a different side first in each round
                if side == "mmseg":
                    times[side].append(mmseg("data_pass")["seconds"])
                else:
                    times[side].append(our_pass(ours[side]))
        decode = bench_decoders(
            [(s.image.read_bytes(), s.label.read_bytes()) for s in ours["pngs"].samples], rounds
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per_image = {k: [t / frames for t in v] for k, v in times.items()}

    def ratio(side: str) -> float:
        return statistics.median(m / o for m, o in zip(times["mmseg"], times[side], strict=True))

    return {
        "frames": frames,
        "rounds": rounds,
        "mmseg_pipeline": info["pipeline"],
        "images_per_s": {k: round(1 / statistics.median(v), 2) for k, v in per_image.items()},
        "ms_per_image": {k: round(1000 * statistics.median(v), 1) for k, v in per_image.items()},
        "speedup_vs_mmseg": {"pngs": round(ratio("pngs"), 3), "cache": round(ratio("cache"), 3)},
        "all_rounds_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "cache_size_line": cache_line,
        "png_decoder": png.DECODER,
        "decode_ms_per_frame": decode,
    }


def bench_decoders(frames: list[tuple[bytes, bytes]], rounds: int) -> dict[str, float]:
    """ms per frame to decode its image and label PNGs alone (median of `rounds` passes), by each decoder:
    what mmseg's loaders call (cv2 for the image, PIL for the label), libspng, and ours."""
    import pyspng

    def mmseg_like(image: bytes, label: bytes) -> None:
        cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        np.asarray(Image.open(io.BytesIO(label)))

    def libspng(image: bytes, label: bytes) -> None:
        pyspng.load(image), pyspng.load(label)

    def ours(image: bytes, label: bytes) -> None:
        png.decode_plain_png(image, "rgb"), png.decode_plain_png(label, "grey")

    decoders = {"cv2 + PIL (mmseg's loaders)": mmseg_like, "libspng": libspng, f"ours ({png.DECODER})": ours}
    times: dict[str, list[float]] = {name: [] for name in decoders}
    for r in range(rounds + 1):  # the first round warms up
        for name, decode in decoders.items():
            start = time.perf_counter()
            for image, label in frames:
                decode(image, label)
            if r:
                times[name].append((time.perf_counter() - start) / len(frames))
    return {name: round(1000 * statistics.median(t), 1) for name, t in times.items()}


# ---- step --------------------------------------------------------------------------------------------
def bench_step(
    mmseg: Mmseg, batch: int, crop: int, iters: int, loss_kw: dict[str, Any] | None = None, **module_kw: Any
) -> dict[str, Any]:
    import lightning.pytorch as pl
    from train_step import RandomCrops, _loader

    from bisenet_pl.models import Segmentor
    from bisenet_pl.training.losses import MultiHeadLoss
    from bisenet_pl.training.module import SegmentationModule

    setup = mmseg("step_setup", batch=batch, crop=crop, seed=0)
    mmseg("step")  # warm-up
    torch.manual_seed(0)
    steps = iters + 2
    dataset = RandomCrops(batch * steps, crop)

    class Interleave(pl.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.mmseg_s: list[float] = []
            self.inside: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            t0 = time.perf_counter()
            reply = mmseg("step")
            self.inside.append(time.perf_counter() - t0)
            self.mmseg_s.append(reply["seconds"])

    module = SegmentationModule(
        copy.deepcopy(Segmentor()), MultiHeadLoss(**(loss_kw or {})), lr=0.05, momentum=0.9,
        weight_decay=5e-4, warmup_steps=1000, max_steps=160000, sync_bn_heads=False, **module_kw,
    )  # fmt: skip
    clock = Interleave()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[clock], precision="32-true",
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=_loader(dataset, batch))
    s = clock.starts
    ours = [s[k + 1] - s[k] - clock.inside[k] for k in range(1, len(s) - 1)]
    theirs = clock.mmseg_s[1 : len(s) - 1]
    return {
        "module": module_kw,
        "loss": loss_kw or {},
        "ours_s": round(statistics.median(ours), 4),
        "mmseg_s": round(statistics.median(theirs), 4),
        "ratio": round(statistics.median(a / b for a, b in zip(ours, theirs, strict=True)), 4),
        "ours_all_s": [round(t, 4) for t in ours],
        "mmseg_all_s": [round(t, 4) for t in theirs],
        "mmseg_optimizer": setup,
    }


# ---- report ------------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    m, d = result["machine"], result["data"]
    lines = [
        f"### Time to train against mmseg {result['mmseg_versions'].get('mmseg', '?')} "
        f"({m['cpu_count']}-core {m['cpu']}, torch {m['torch']}, one core, {result['threads']} thread)",
        "",
        f"Load average (1/5/15 min) at start {result['load_average_start']}, at end "
        f"{result['load_average_end']}; {result['date']}. Command: `{result['command']}`",
        "",
        f"**Data pipeline per core**, full-size 2048x1024 frames, {d['frames']} frames x {d['rounds']} "
        "interleaved rounds (median); mmseg: its config's train dataset, one item per frame; ours: "
        "`CityscapesDataModule`'s train dataset (the same recipe, plus the normalise and pad mmseg does "
        "later in its model).",
        "",
        "| pipeline | ms / image | images / s | vs mmseg (per core) |",
        "| --- | --- | --- | --- |",
        f"| mmseg 1.2.2 train pipeline (PNGs, cv2) | {d['ms_per_image']['mmseg']} | "
        f"{d['images_per_s']['mmseg']} | 1.00x |",
        f"| ours, from the PNGs ({d['png_decoder']} decode) | {d['ms_per_image']['pngs']} | "
        f"{d['images_per_s']['pngs']} | "
        f"**{d['speedup_vs_mmseg']['pngs']:.2f}x** |",
        f"| ours, from the decoded-frame cache (`data.cache`) | {d['ms_per_image']['cache']} | "
        f"{d['images_per_s']['cache']} | **{d['speedup_vs_mmseg']['cache']:.2f}x** |",
        "",
        f"Cache: {d['cache_size_line']}",
        "",
        "**PNG decode alone** (image + label of a frame, the same frames, ms per frame, median of "
        f"{d['rounds']} passes): what most of an item from the PNGs costs.",
        "",
        "| decoder | ms / frame |",
        "| --- | --- |",
        *(f"| {name} | {ms} |" for name, ms in d["decode_ms_per_frame"].items()),
        "",
    ]
    steps = result["steps"]
    if steps:
        first = steps[0]
        lines += [
            f"**Training step**, batch {result['batch']} of {result['crop']}x{result['crop']}, fp32, "
            "5 heads, "
            f"{len(first['ours_all_s'])} timed iterations each, a mmseg `train_step` inside each of ours "
            "(median of per-iteration ratios; lower is faster).",
            "",
            "| step | s / iteration | mmseg s / iteration (same run) | ours / mmseg |",
            "| --- | --- | --- | --- |",
        ]
        for row in steps:
            cells = [f"ours, {row['label']}", f"{row['ours_s']:.3f}", f"{row['mmseg_s']:.3f}"]
            lines.append("| " + " | ".join(cells) + f" | **{row['ratio']:.3f}x** |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--core", type=int, default=None, help="the core both sides run on (default: the last)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side (default 1)")
    parser.add_argument("--frames", type=int, default=6, help="full-size frames per pass (default 6)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved passes per side (default 7)")
    parser.add_argument("--iters", type=int, default=5, help="timed training steps per side (default 5)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--no-step", action="store_true", help="the data pipeline only")
    parser.add_argument("--compile", action="store_true", help="also time module.compile=true (minutes)")
    venv = Path(os.environ.get("BISENET_PARITY_VENV", DEFAULT_PARITY_VENV))
    parser.add_argument("--parity-venv", type=Path, default=venv, help="mmseg's venv (make parity-env)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "experiments")
    parser.add_argument("--json", action="store_true", help="print the result as the last stdout line")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    import lightning.pytorch  # noqa: F401

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "bisenet_pl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    python = args.parity_venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"no mmseg reference venv at {args.parity_venv}: run `make parity-env` first")
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(0)
    cv2.ocl.setUseOpenCL(False)
    load_start = _load()
    t0 = time.perf_counter()
    mmseg = Mmseg(python, core, args.threads)
    try:
        data = bench_data(mmseg, args.frames, args.rounds)
        print(
            f"data per core: mmseg {data['images_per_s']['mmseg']} images/s, ours from the PNGs "
            f"{data['images_per_s']['pngs']} ({data['speedup_vs_mmseg']['pngs']:.2f}x), from the cache "
            f"{data['images_per_s']['cache']} ({data['speedup_vs_mmseg']['cache']:.2f}x)",
            flush=True,
        )
        steps = []
        if not args.no_step:
            configs: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
                ("default (channels_last, foreach SGD, fused loss)", {}, {}),
                ("as mmseg runs (NCHW, per-parameter SGD, mmseg's loss ops)", MMSEG_LIKE, MMSEG_LIKE_LOSS),
            ]
            if args.compile:  # the first (warm-up) step compiles; it is not timed
                configs.append(
                    ("module.compile=true (channels_last, foreach SGD, fused loss)", {"compile": True}, {})
                )
            for label, kw, loss_kw in configs:
                row = bench_step(mmseg, args.batch, args.crop, args.iters, loss_kw, **kw)
                row["label"] = label
                steps.append(row)
                print(
                    f"train step, ours {label}: {row['ours_s']:.3f} s/it, mmseg {row['mmseg_s']:.3f} s/it, "
                    f"ratio {row['ratio']:.3f}",
                    flush=True,
                )
    finally:
        mmseg.close()
    result: dict[str, Any] = {
        "benchmark": "train_vs_mmseg",
        "core": "one core for both sides, taken in turns",
        "threads": args.threads,
        "batch": args.batch,
        "crop": args.crop,
        "data": data,
        "steps": steps,
        "mmseg_versions": mmseg.hello.get("versions", {}),
        "machine": machine_info("cpu"),
        "load_average_start": load_start,
        "load_average_end": _load(),
        "wall_s": round(time.perf_counter() - t0, 1),
        "command": command_line(["benchmarks/train_vs_mmseg.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    result["machine"].pop("torch_threads", None)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "bench_train.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out_dir / "bench_train.md").write_text(text)
    print(text)
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
