"""The deployment table: every way to run the model on a CPU, against plain fp32 eager in the same run.

For each path (plain fp32 eager, the reference; fused + channels_last; bf16 where the CPU has native
bf16; ONNX Runtime fp32 and INT8; OpenVINO fp32 and INT8; the baked graph) the table gives:

- latency: the median over interleaved rounds of one call, batch 1, from the uint8 RGB frame at the
  size to segment to the label map on the host. That includes the normalisation for the paths that take
  normalised floats (the baked graph does it inside), so every path does the same job: image in, labels
  out. Ratio: the median over rounds of (path time / reference time in that round), because a shared
  machine's speed drifts within minutes;
- argmax agreement with the reference on the timed frames (`bisenet_pl.evaluation.agreement`);
- mIoU on a labelled split through `inference.modes.segment` (what `evaluate` computes);
- the gate it must keep: fp32 paths >= 99.99 % agreement (their logits are within 1e-4), bf16 >= 99.9 %
  (`accelerate.MIN_AGREEMENT`), INT8 at most `INT8_MAX_MIOU_DROP` mIoU points below the reference (the
  export's INT8 gate).

`build_record` measures; `markdown` renders the record (tested at toy size); `benchmarks/deploy.py` is
the command behind `make bench` that prepares the files and writes `experiments/deploy.md` / `.json`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bisenet_pl.data.preprocess import MEAN, STD, preprocess
from bisenet_pl.deploy.export.quantize import DEFAULT_MAX_MIOU_DROP
from bisenet_pl.deploy.runtime.base import returns_labels, takes_uint8
from bisenet_pl.evaluation.agreement import label_agreement
from bisenet_pl.inference.modes import Net, predict_labels, segment

if TYPE_CHECKING:
    from bisenet_pl.models.segmentor import Segmentor

#: What each kind of path must keep (see the module docstring).
FP32_MIN_AGREEMENT = 0.9999
INT8_MAX_MIOU_DROP = DEFAULT_MAX_MIOU_DROP  # the export's INT8 gate
REFERENCE = "plain fp32 eager (unfused, NCHW)"

Labels = Callable[[np.ndarray], torch.Tensor]


@dataclass
class DeployPath:
    """One row: `labels(rgb)` is the timed call (uint8 (H, W, 3) -> (H, W) labels on the host); `net`
    (normalised (N, 3, H, W) -> scores) is what the mIoU is measured with; `gate` is "reference", "fp32",
    "bf16" or "int8"."""

    name: str
    gate: str
    labels: Labels
    net: Net


@dataclass
class Unavailable:
    """A path this run could not build, and why (a missing package, a failed export...)."""

    name: str
    gate: str
    reason: str


def normalised_labels(
    net: Net, mean: Sequence[float] = MEAN, std: Sequence[float] = STD, fast_argmax: bool = True
) -> Labels:
    """The timed call of a path that takes normalised floats: normalise, the predict path (with the exact
    cheap upsample + argmax where the net has 1/8 logits, unless `fast_argmax=False`: the reference runs
    mmseg's full upsample + argmax), labels to the host."""

    def run(rgb: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return predict_labels(net, preprocess(rgb, None, mean, std), fast_argmax=fast_argmax)[0].cpu()

    return run


def torch_paths(model: Segmentor) -> list[DeployPath | Unavailable]:
    """plain fp32 eager (the reference), fused + channels_last, and bf16 (both scopes) where native."""
    from bisenet_pl.hardware import cpu_has_native_bf16
    from bisenet_pl.inference.accelerate import FastNet, FastOptions

    reference = normalised_labels(model, fast_argmax=False)
    paths: list[DeployPath | Unavailable] = [DeployPath(REFERENCE, "reference", reference, model)]
    fcl = FastNet(model, FastOptions(fuse=True, channels_last=True))
    paths.append(DeployPath(fcl.name + " + fast argmax", "fp32", normalised_labels(fcl), fcl))
    for scope in ("all", "heavy"):
        options = FastOptions(fuse=True, channels_last=True, precision="bf16", scope=scope)
        if not cpu_has_native_bf16():
            paths.append(Unavailable(options.name, "bf16", "this CPU has no native bf16 (avx512_bf16/AMX)"))
            continue
        net = FastNet(model, options)
        paths.append(DeployPath(options.name + " + fast argmax", "bf16", normalised_labels(net), net))
    return paths


def loaded_path(name: str, gate: str, source: Any, backend: str) -> DeployPath | Unavailable:
    """A path from a file through `load_net` (as evaluate/predict run it); a baked graph is fed the uint8
    image itself. Any failure to open it is recorded as the row's reason."""
    from bisenet_pl.inference.backends import load_net

    try:
        loaded = load_net(source, backend, "cpu")
    except Exception as e:  # a missing backend or a file that did not get made: a row that says why
        return Unavailable(name, gate, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    net = loaded.net
    native = getattr(net, "native", None)
    if callable(native) and takes_uint8(net) and returns_labels(net):
        layout = net.contract.layout  # type: ignore[attr-defined]

        def run(rgb: np.ndarray) -> torch.Tensor:
            feed = rgb[None] if layout == "nhwc" else np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
            return torch.from_numpy(native(feed)[0])

        return DeployPath(name, gate, run, net)
    mean, std = loaded.meta.get("mean", MEAN), loaded.meta.get("std", STD)
    return DeployPath(name, gate, normalised_labels(net, mean, std), net)


def street_frames(size: tuple[int, int], n: int, seed: int = 0) -> list[np.ndarray]:
    """`n` synthetic street frames, uint8 RGB (H, W, 3); seeds apart from the dataset's and the check's."""
    from bisenet_pl.data.synthetic import render_scene

    return [render_scene([seed, 13, i], size[0], size[1])["image"] for i in range(n)]


def time_paths(paths: Sequence[DeployPath], frames: Sequence[np.ndarray], repeats: int) -> dict[str, Any]:
    """Per path: median ms, median per-round ratio to `paths[0]` (the reference), and argmax agreement
    with the reference on `frames` (from the untimed warm-up calls)."""
    labels = {p.name: [p.labels(f) for f in frames] for p in paths}  # warm-up, and the agreement
    reference = paths[0].name
    times: dict[str, list[float]] = {p.name: [] for p in paths}
    ratios: dict[str, list[float]] = {p.name: [] for p in paths}
    for _ in range(repeats):
        for frame in frames:
            this_round = {}
            for p in paths:
                t0 = time.perf_counter()
                p.labels(frame)
                this_round[p.name] = time.perf_counter() - t0
            for name, seconds in this_round.items():
                times[name].append(seconds)
                ratios[name].append(seconds / this_round[reference])
    return {
        p.name: {
            "ms": round(1000 * statistics.median(times[p.name]), 1),
            "ratio": round(statistics.median(ratios[p.name]), 3),
            "agreement": round(label_agreement(labels[reference], labels[p.name]), 6),
        }
        for p in paths
    }


def miou(net: Net, dataset: Any, num_classes: int, ignore_index: int = 255) -> float:
    """mIoU (%) of `net` on a labelled dataset of test-pipeline items, whole-image passes (as `evaluate`)."""
    from bisenet_pl.evaluation.metrics import SegmentationMetric

    metric = SegmentationMetric(num_classes=num_classes, ignore_index=ignore_index)
    with torch.inference_mode():
        for i in range(len(dataset)):
            item = dataset[i]
            label = item["label"].unsqueeze(0)
            pred = segment(net, item["image"].unsqueeze(0), tuple(label.shape[-2:])).argmax(1)
            metric.update(pred, label)
    return round(float(metric.compute()["mIoU"]), 2)


@dataclass
class Plan:
    """What one run measures."""

    sizes: Sequence[tuple[int, int]] = ((512, 1024), (1024, 2048))
    repeats: int = 5
    frames: int = 1
    goal: float = 0.25  # the target ratio at the largest size


def build_record(
    paths: Sequence[DeployPath | Unavailable],
    plan: Plan,
    dataset: Any = None,
    num_classes: int = 19,
    ignore_index: int = 255,
) -> dict[str, Any]:
    """Measure every available path (the first must be the reference) and judge each against its gate."""
    from bisenet_pl.hardware import machine_info

    # The load of a shared machine colours every number: recorded before and after the timing.
    load_before = machine_info().get("load_average_1_5_15min")
    ready = [p for p in paths if isinstance(p, DeployPath)]
    if not ready or ready[0].gate != "reference":
        raise ValueError("the first path must be the reference (plain fp32 eager)")
    by_size = {}
    for size in plan.sizes:
        by_size[f"{size[0]}x{size[1]}"] = time_paths(ready, street_frames(size, plan.frames), plan.repeats)
    rows = []
    for p in paths:
        row: dict[str, Any] = {"path": p.name, "gate": p.gate}
        if isinstance(p, Unavailable):
            row["unavailable"] = p.reason
        else:
            row["sizes"] = {size: timed[p.name] for size, timed in by_size.items()}
            if dataset is not None:
                row["miou"] = miou(p.net, dataset, num_classes, ignore_index)
        rows.append(row)
    reference_miou = rows[0].get("miou")
    for row in rows:
        if "unavailable" not in row:
            row["passes_gate"], row["gate_text"] = judge(row, reference_miou)
    info = machine_info()
    machine: dict[str, Any] = {
        k: info[k] for k in ("cpu", "cpu_count", "torch_threads", "torch", "onnxruntime") if k in info
    }
    machine["load_average_before_after"] = [load_before, info.get("load_average_1_5_15min")]
    record = {
        "machine": machine,
        "sizes": list(by_size),
        "repeats": plan.repeats,
        "frames": plan.frames,
        "goal": plan.goal,
        "rows": rows,
    }
    record["verdict"] = verdict(record)
    return record


def judge(row: dict[str, Any], reference_miou: float | None) -> tuple[bool, str]:
    """(passes, the gate in words) for one measured row."""
    agreement = min(s["agreement"] for s in row["sizes"].values())
    if row["gate"] == "reference":
        return True, "the reference"
    if row["gate"] in ("fp32", "bf16"):
        from bisenet_pl.inference.accelerate import MIN_AGREEMENT

        need = FP32_MIN_AGREEMENT if row["gate"] == "fp32" else MIN_AGREEMENT
        return agreement >= need, f"agreement >= {100 * need:.2f} % at every size"
    if reference_miou is None or row.get("miou") is None:
        return False, f"mIoU drop <= {INT8_MAX_MIOU_DROP} (no labelled split measured)"
    drop = reference_miou - row["miou"]
    return drop <= INT8_MAX_MIOU_DROP, f"mIoU drop <= {INT8_MAX_MIOU_DROP} (here {drop:.2f})"


def verdict(record: dict[str, Any]) -> dict[str, Any]:
    """The fastest path at the largest size that keeps its gate, and whether it meets the goal ratio."""
    largest = record["sizes"][-1]
    keeping = [r for r in record["rows"] if r.get("passes_gate") and r["gate"] != "reference"]
    if not keeping:
        return {"size": largest, "path": None, "ratio": None, "meets_goal": False}
    best = min(keeping, key=lambda r: r["sizes"][largest]["ratio"])
    ratio = best["sizes"][largest]["ratio"]
    return {"size": largest, "path": best["path"], "ratio": ratio, "meets_goal": ratio <= record["goal"]}


def _cell_pct(value: float) -> str:
    return f"{100 * value:.3f} %"


def markdown(record: dict[str, Any]) -> str:
    """The table and the verdict as Markdown (experiments/deploy.md)."""
    sizes = record["sizes"]
    head = ["path"]
    for s in sizes:
        head += [f"{s} ms", f"{s} ratio", f"{s} agreement"]
    head += ["val mIoU", "gate", "keeps it"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in record["rows"]:
        if "unavailable" in row:
            cells = (
                [row["path"]] + ["—"] * (3 * len(sizes) + 1) + [row["gate"], f"not run: {row['unavailable']}"]
            )
        else:
            cells = [row["path"]]
            for s in sizes:
                m = row["sizes"][s]
                cells += [f"{m['ms']:.0f}", f"**{m['ratio']:.2f}x**", _cell_pct(m["agreement"])]
            cells += [f"{row['miou']:.2f}" if row.get("miou") is not None else "—", row["gate_text"]]
            cells.append("yes" if row["passes_gate"] else "**no**")
        lines.append("| " + " | ".join(cells) + " |")
    v = record["verdict"]
    if v["path"] is None:
        summary = f"No path but the reference keeps its gate at {v['size']}."
    else:
        meets = "meets" if v["meets_goal"] else "does not meet"
        summary = (
            f"Fastest path that keeps its gate at {v['size']}: {v['path']}, {v['ratio']:.2f}x the plain fp32 "
            f"eager time: {meets} the <= {record['goal']:.2f}x goal."
        )
    return "\n".join(lines) + "\n\n" + summary + "\n"


__all__ = [
    "FP32_MIN_AGREEMENT",
    "INT8_MAX_MIOU_DROP",
    "REFERENCE",
    "DeployPath",
    "Plan",
    "Unavailable",
    "build_record",
    "judge",
    "loaded_path",
    "markdown",
    "miou",
    "normalised_labels",
    "street_frames",
    "time_paths",
    "torch_paths",
    "verdict",
]
