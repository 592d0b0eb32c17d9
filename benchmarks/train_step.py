"""Seconds per training iteration: the Lightning module in a real `Trainer` fit loop vs a plain PyTorch loop.

    python benchmarks/train_step.py [--batch 2] [--crop 512] [--iters 8] [--threads 2] [--json]

Why: Lightning must not slow training down. Both loops run the 4x4 recipe's iteration on the same
network, loss and data: BiSeNetV2 with its four aux heads, mmseg's CE on all five heads, SGD (momentum
0.9, weight decay 5e-4) with the warm-up x poly schedule stepped every iteration, fp32, batch 2 of
512x512 crops, 2 torch threads, a DataLoader over a small in-memory dataset (random normalised images
and labels with some 255s: the cost does not depend on the content). Lightning runs
`SegmentationModule` in `Trainer.fit` (no logger, no checkpoints, no progress bar, no validation); the
plain loop is next(batch), forward, loss, `zero_grad`, backward, `step`, scheduler step, on its own copy
of the network, optimiser and DataLoader.

Interleaved per iteration, because the shared machine's speed changes within seconds (a burst of
another job during one loop's block of iterations once made Lightning look 70 % slower): one plain
iteration runs, timed, inside each Lightning iteration's `on_train_batch_end` hook. A Lightning
iteration's time is the time between consecutive `on_train_batch_start` hooks (so everything Lightning
does per step, data fetch and hooks included, counts) minus the plain iteration inside it. The first
iteration of each loop is warm-up; the last Lightning one has no next start and is not used. Result:
the median seconds per iteration of each, and the median of the per-iteration ratios. Both loops start
from the same weights with the same dropout masks, and the first batch's loss must match. Writes
`experiments/bench_train_step.json`; with `--json` the last stdout line is
`{"lightning_s": ..., "plain_s": ..., "ratio": ..., ...}`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
from torch.utils.data import DataLoader, Dataset

from bisenet_pl.hardware import machine_info
from bisenet_pl.models import Segmentor
from bisenet_pl.speed.timing import command_line
from bisenet_pl.training.losses import MultiHeadLoss
from bisenet_pl.training.schedules import build_warmup_poly_scheduler

REPO = Path(__file__).resolve().parents[1]

LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
MAX_STEPS, WARMUP_STEPS = 160000, 1000
SEED = 0


class RandomCrops(Dataset):
    """`n` fixed (image, label) pairs: normalised-looking images, labels 0..18 with 5 % ignore (255)."""

    def __init__(self, n: int, crop: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, crop, crop, generator=g)
        labels = torch.randint(0, 19, (n, crop, crop), generator=g)
        labels[torch.rand(n, crop, crop, generator=g) < 0.05] = 255
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


def _loader(dataset: Dataset, batch: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0, drop_last=True)


class PlainLoop:
    """The plain PyTorch training loop, one iteration per `step()` call (timed by the caller)."""

    def __init__(self, model: torch.nn.Module, loader: DataLoader) -> None:
        self.model = model.train()
        self.loss_fn = MultiHeadLoss()
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
        )
        self.scheduler = build_warmup_poly_scheduler(
            self.optimizer,
            base_lr=LR,
            max_steps=MAX_STEPS,
            warmup_steps=WARMUP_STEPS,
            warmup_ratio=0.1,
            power=0.9,
            min_lr=1e-4,
        )
        self.loader = loader
        self.batches: Iterator[dict[str, torch.Tensor]] = iter(loader)
        self.losses: list[float] = []

    def step(self) -> None:
        try:
            batch = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            batch = next(self.batches)
        decode, aux = self.model(batch["image"])
        loss = self.loss_fn([decode, *aux], batch["label"])["total"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.losses.append(float(loss.detach()))


def run(batch: int, crop: int, iters: int) -> dict[str, Any]:
    """`iters` timed iteration pairs (after one warm-up pair): per-iteration seconds of both loops."""
    import lightning.pytorch as pl

    from bisenet_pl.training.module import SegmentationModule

    torch.manual_seed(SEED)
    init = Segmentor()
    steps = iters + 2  # warm-up + timed + one whose start closes the last timed interval
    dataset = RandomCrops(batch * steps, crop)
    plain = PlainLoop(copy.deepcopy(init), _loader(dataset, batch))

    class Interleave(pl.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.plain_s: list[float] = []
            self.first_loss = float("nan")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            if not self.starts:
                torch.manual_seed(SEED)  # same dropout masks as the plain loop's first batch
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if len(self.starts) == 1:
                self.first_loss = float(outputs["loss"].detach())
                torch.manual_seed(SEED)
            with torch.enable_grad():
                t0 = time.perf_counter()
                plain.step()
                self.plain_s.append(time.perf_counter() - t0)

    module = SegmentationModule(
        copy.deepcopy(init), MultiHeadLoss(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
        warmup_steps=WARMUP_STEPS, max_steps=MAX_STEPS, sync_bn_heads=False,
        channels_last=False, optimizer_impl="loop",  # the plain loop's layout and SGD: Lightning's cost alone
    )  # fmt: skip
    clock = Interleave()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
        precision="32-true",
    )
    trainer.fit(module, train_dataloaders=_loader(dataset, batch))
    s, p = clock.starts, clock.plain_s
    lightning = [s[k + 1] - s[k] - p[k] for k in range(1, len(s) - 1)]
    return {
        "lightning": lightning,
        "plain": p[1 : len(s) - 1],
        "first_loss": {"lightning": clock.first_loss, "plain": plain.losses[0]},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--iters", type=int, default=8, help="timed iterations of each loop (default 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the result as the last stdout line")
    parser.add_argument("--output", type=Path, default=REPO / "experiments" / "bench_train_step.json")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    import lightning.pytorch  # noqa: F401  (configures its loggers on import; quieten them afterwards)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    load_at_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = run(args.batch, args.crop, args.iters)
    wall = time.perf_counter() - t0
    light, plain = out["lightning"], out["plain"]
    lightning_s, plain_s = statistics.median(light), statistics.median(plain)
    ratio = statistics.median(a / b for a, b in zip(light, plain, strict=True))
    first = out["first_loss"]
    same_loss = abs(first["lightning"] - first["plain"]) <= 1e-5 * max(1.0, abs(first["plain"]))
    result: dict[str, Any] = {
        "benchmark": "train_step",
        "recipe": "4x4 iteration: BiSeNetV2 + 4 aux heads, CE on 5 heads, SGD 0.9/5e-4, warm-up x poly, fp32",
        "batch": args.batch,
        "crop": [args.crop, args.crop],
        "threads": args.threads,
        "timed_iterations_each": len(light),
        "interleaving": "one plain iteration inside each Lightning iteration (on_train_batch_end)",
        "lightning_s": round(lightning_s, 4),
        "plain_s": round(plain_s, 4),
        "ratio": round(ratio, 4),
        "ratio_of_medians": round(lightning_s / plain_s, 4),
        "lightning_overhead_pct": round(100 * (ratio - 1), 2),
        "lightning_all_s": [round(t, 4) for t in light],
        "plain_all_s": [round(t, 4) for t in plain],
        "first_loss": first,
        "same_first_loss": same_loss,
        "wall_s": round(wall, 1),
        "machine": machine_info("cpu"),
        "load_average_at_start": load_at_start,
        "command": command_line(["benchmarks/train_step.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"train step (batch {args.batch}, {args.crop}x{args.crop}, {args.threads} threads, fp32): Lightning "
        f"{lightning_s:.3f} s/it, plain PyTorch {plain_s:.3f} s/it, median per-iteration ratio {ratio:.3f} "
        f"({100 * (ratio - 1):+.1f} %); first-batch loss {'equal' if same_loss else 'DIFFERENT'} "
        f"({first['lightning']:.5f} vs {first['plain']:.5f}). Wrote {args.output}"
    )
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
