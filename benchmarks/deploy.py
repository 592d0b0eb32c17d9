"""The deployment table (`make bench`): each way to run the demo model on this CPU, against plain fp32
eager measured in the same run, with its accuracy gate.

    python benchmarks/deploy.py [--ckpt PATH] [--data-root DIR] [--sizes 512x1024,1024x2048] [--repeats 5]
        [--calibration 300] [--out-dir experiments] [--json]

Prepares the deployable files with the export command itself (`python -m bisenet_pl.export`: the
plain ONNX file, the baked graph `preprocess=true argmax=true`, `format=onnx-int8`,
`format=openvino-int8` and `format=onnx-int8 preprocess=true argmax=true`, each with its own export
check or INT8 gate), then measures every path with
`benchmarks/deploy_table.py` (method and gates: its docstring). A file that cannot be made (a
missing package, an INT8 model refused by its gate) becomes a row that says why.

Model: `--ckpt`, else the newest `outputs/demo/*/checkpoints/last.ckpt` (`make demo`); without one the
benchmark stops and says which checkpoint it needs (it trains nothing). mIoU: on the val split of
`--data-root` (default `data/synthetic_cityscapes`, the demo's data) at the model's test scale. Writes
`experiments/deploy.json` and `experiments/deploy.md`; with `--json` the last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "data" / "synthetic_cityscapes"


def readable(path: str | Path) -> str:
    """`path` relative to the repository, a demo run written `<run>` (`speed.timing.portable`)."""
    from bisenet_pl.speed.timing import portable

    return portable(path, REPO)


def find_checkpoint(ckpt: str | None) -> Path:
    if ckpt is not None:
        path = Path(ckpt)
        if not path.is_file():
            raise SystemExit(f"--ckpt {ckpt}: no such file")
        return path
    demos = sorted(glob.glob(str(REPO / "outputs" / "demo" / "*" / "checkpoints" / "last.ckpt")))
    if not demos:
        raise SystemExit(
            "the deployment table needs the demo checkpoint outputs/demo/<run>/checkpoints/last.ckpt "
            "(`make demo` trains it), or --ckpt PATH; this benchmark trains nothing"
        )
    return Path(demos[-1])


def export(ckpt: Path, data_root: Path, out: Path, *overrides: str) -> tuple[Path | None, str, float]:
    """`python -m bisenet_pl.export` into `out`: (the file or None, the reason if none, seconds)."""
    cmd = [
        sys.executable, "-m", "bisenet_pl.export", f"ckpt={ckpt}", f"out={out}", f"data.root={data_root}",
        f"data.synthetic_root={data_root}", f"hydra.run.dir={out.parent / ('run_' + out.name)}", *overrides,
    ]  # fmt: skip
    print("$ python -m bisenet_pl.export " + " ".join([f"out={out.name}", *overrides]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-3:]
    for line in tail:
        print("  " + line)
    if proc.returncode == 0 and out.is_file():
        return out, "", seconds
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    reason = (errors[-1] if errors else f"exit status {proc.returncode}").replace(str(out.parent) + "/", "")
    print(f"  failed ({seconds:.0f} s): {reason}", flush=True)
    return None, f"export failed: {reason[:240]}", seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", default="512x1024,1024x2048")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--calibration", type=int, default=300, help="INT8 calibration images (train split)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=REPO / "experiments")
    parser.add_argument("--json", action="store_true", help="print the record as the last stdout line")
    args = parser.parse_args(argv)

    import torch
    from deploy_table import (
        Plan,
        Unavailable,
        build_record,
        loaded_path,
        markdown,
        torch_paths,
    )

    from bisenet_pl.checkpoints import load_model
    from bisenet_pl.data.cityscapes import CityscapesDataset
    from bisenet_pl.data.transforms import build_test_transform
    from bisenet_pl.speed.frames import parse_size
    from bisenet_pl.speed.timing import command_line

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ckpt = find_checkpoint(args.ckpt)
    if not (args.data_root / "gtFine" / "val").is_dir():
        raise SystemExit(f"--data-root {args.data_root}: no val split for the mIoU (`make demo` writes it)")
    model = load_model(ckpt, device="cpu")
    test_scale = tuple(model.meta.get("test_scale") or (2048, 1024))
    dataset = CityscapesDataset(args.data_root, "val", transform=build_test_transform(test_scale))

    work = Path(tempfile.mkdtemp(prefix="deploy_"))
    cal = [f"calibration.images={args.calibration}"]
    files: dict[str, tuple[Path | None, str, float]] = {
        "onnx": export(ckpt, args.data_root, work / "model.onnx"),
        "baked": export(ckpt, args.data_root, work / "baked.onnx", "preprocess=true", "argmax=true"),
        "onnx-int8": export(ckpt, args.data_root, work / "model.int8.onnx", "format=onnx-int8", *cal),
        "openvino-int8": export(ckpt, args.data_root, work / "model.int8.xml", "format=openvino-int8", *cal),
        "baked-int8": export(
            ckpt,
            args.data_root,
            work / "baked.int8.onnx",
            "format=onnx-int8",
            "preprocess=true",
            "argmax=true",
            *cal,
        ),
    }

    def from_file(name: str, gate: str, key: str, backend: str) -> Any:
        path, reason, _ = files[key]
        return loaded_path(name, gate, path, backend) if path is not None else Unavailable(name, gate, reason)

    paths = [
        *torch_paths(model),
        from_file("onnxruntime fp32 (exported file)", "fp32", "onnx", "onnxruntime"),
        from_file("onnxruntime int8 (QDQ, exported file)", "int8", "onnx-int8", "onnxruntime"),
        from_file("openvino fp32 (the exported .onnx)", "fp32", "onnx", "openvino"),
        from_file("openvino int8 (NNCF, exported IR)", "int8", "openvino-int8", "openvino"),
        from_file("baked graph: uint8 in, labels out (onnxruntime fp32)", "fp32", "baked", "onnxruntime"),
        from_file(
            "baked INT8 graph: uint8 in, labels out (onnxruntime int8)", "int8", "baked-int8", "onnxruntime"
        ),
    ]
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    print(
        f"measuring {sum(1 for p in paths if not isinstance(p, Unavailable))} paths at {args.sizes}",
        flush=True,
    )
    record = build_record(
        paths,
        Plan(sizes=sizes, repeats=args.repeats, frames=args.frames),
        dataset,
        num_classes=int(model.num_classes),
    )
    record.update(
        {
            "model": readable(ckpt),
            "data": f"{readable(args.data_root)}, val split ({len(dataset)} images) at test scale "
            f"{test_scale[0]}x{test_scale[1]}",
            "command": command_line([readable(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])]),
            "exports": {
                k: {"made": p is not None, "seconds": round(s, 1), "reason": r}
                for k, (p, r, s) in files.items()
            },
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "deploy.json").write_text(json.dumps(record, indent=2) + "\n")
    text = report(record, markdown(record))
    (args.out_dir / "deploy.md").write_text(text)
    print("\n" + text)
    print(f"deploy benchmark: {record['seconds']:.0f} s; {args.out_dir / 'deploy.md'}")
    if args.json:
        print(json.dumps(record))


def report(record: dict[str, Any], table: str) -> str:
    m = record["machine"]
    load = m.get("load_average_before_after") or [None, None]
    method = " ".join(
        [
            "Latency: one call, batch 1, from the uint8 RGB frame at that size to the label map on the host",
            "(normalisation included where the path needs it; the baked graph does it inside), synthetic",
            f"street frames, median of {record['repeats']} interleaved rounds; ratio = median over rounds of",
            "(path time / plain fp32 eager time in the same round). Agreement: share of pixels labelled as",
            f"plain fp32 eager labels them, on the timed frames. mIoU: {record['data']}, as `evaluate`",
            "computes it. Gates: fp32 paths >= 99.99 % agreement, bf16 >= 99.9 %, INT8 at most 0.5 mIoU",
            "points below plain fp32.",
        ]
    )
    return (
        f"### Deployment paths ({m['cpu_count']}-core {m['cpu']} CPU, {m['torch_threads']} threads, torch "
        f"{m['torch']}, onnxruntime {m.get('onnxruntime', '-')})\n\n{method}\n"
        f"Model: {record['model']}. Command: `{record['command']}` ({record['seconds']:.0f} s). Load "
        f"average (1, 5, 15 min) before / after the timing: {load[0]} / {load[1]} on {m['cpu_count']} "
        f"cores.\n\n{table}"
    )


if __name__ == "__main__":
    main()
