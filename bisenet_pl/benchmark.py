"""`python -m bisenet_pl.benchmark [ckpt=PATH] [size=1024x2048] [device=cpu|cuda] [precision=fp32|bf16|fp16]
[backend=torch|onnxruntime] [fuse=true] [channels_last=true] [compile=true] [fast_argmax=true] [fast=true]`

Inference speed measured as mmseg's `benchmark.py` does : batch 1, the full predict path
(network, the x8 bilinear upsample to the image size and the argmax, result copied to the host;
preprocessing excluded, as in mmseg 1.x), `warmup` untimed calls and then `repeats` timed ones;
fps = repeats / total time (mmseg: 200 images, the first 5 warm-up, fps = 195 / sum of times). Prints
fps, latency p50/p90, peak memory (CUDA max allocated, or the process's peak RSS on CPU), parameters and
GMACs (mmseg's get_flops count: backbone + decode head, no final upsample), and writes a JSON into
`experiments/` with the machine, the exact command and every timing.

Inputs are `images` synthetic street frames (`bisenet_pl.data.synthetic`) at `size`, cycled; with
`data_root=` the first `images` frames of a Cityscapes split go through the test pipeline instead. The
network's cost does not depend on the content; the `fast_argmax` path does a little (it interpolates only
at class boundaries), so use a trained checkpoint for that path: a random-init model has noisy labels
everywhere and makes it look slower than it is.

When `ckpt` is given and the path is not the plain fp32 model, the argmax agreement with the plain
fp32 eager model is measured on the first `agreement_images` frames and reported (every accelerated
path guarantees >= 99.9 %).

Examples:
    python -m bisenet_pl.benchmark ckpt=model.ckpt device=cuda precision=fp16           # mmseg's method
    python -m bisenet_pl.benchmark ckpt=model.ckpt device=cpu repeats=10 fast=true      # CPU, quick
    python -m bisenet_pl.benchmark ckpt=model.onnx backend=onnxruntime repeats=10
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bisenet_pl.cli import CONFIG_PATH, hydra_output_dir, quiet_environment, readable_errors

quiet_environment()

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from bisenet_pl.errors import ConfigError  # noqa: E402
from bisenet_pl.hardware import resolve_device  # noqa: E402
from bisenet_pl.speed.frames import parse_size  # noqa: E402
from bisenet_pl.speed.inference import InferenceBenchmark, run_inference_benchmark  # noqa: E402
from bisenet_pl.speed.timing import command_line  # noqa: E402

log = logging.getLogger("bisenet_pl.benchmark")


def spec_from_config(cfg: DictConfig) -> InferenceBenchmark:
    from bisenet_pl.inference.accelerate import FastOptions

    try:
        options = FastOptions(
            fuse=bool(cfg.fuse),
            channels_last=bool(cfg.channels_last),
            precision=str(cfg.precision),
            compile=bool(cfg.compile),
            scope=str(cfg.scope),
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    device = resolve_device(str(cfg.device))
    from bisenet_pl.hardware import supported_precisions

    if cfg.backend == "torch" and not cfg.fast and options.precision not in supported_precisions(device):
        log.warning("precision=%s has no fast kernels on %s: measuring it anyway", options.precision, device)
    return InferenceBenchmark(
        source=None if cfg.ckpt is None else str(cfg.ckpt),
        backend=str(cfg.backend),
        device=device,
        size=parse_size(cfg.size),
        fast=bool(cfg.fast),
        options=options,
        fast_argmax=bool(cfg.fast_argmax),
        allow_compile=bool(cfg.compile),
        exporter=str(cfg.exporter),
        warmup=int(cfg.warmup),
        repeats=int(cfg.repeats),
        images=int(cfg.images),
        data_root=None if not cfg.data_root else str(cfg.data_root),
        split=str(cfg.split),
        seed=int(cfg.seed),
        agreement_images=int(cfg.agreement_images),
    )


def benchmark(
    cfg: DictConfig, argv: Sequence[str] | None = None, spec: InferenceBenchmark | None = None
) -> dict[str, Any]:
    """Run the benchmark `cfg` describes; write its JSON to `cfg.output` when that is set."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    result = run_inference_benchmark(
        spec or spec_from_config(cfg),
        command_line(argv if argv is not None else sys.argv, module="bisenet_pl.benchmark"),
    )
    print(result["summary"])
    out = Path(str(cfg.output)) if cfg.output else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return result


def resolve_output(cfg: DictConfig, spec: InferenceBenchmark, run_dir: Path | None) -> str | None:
    """`output=auto` (the default): the run folder; `output=experiments`: the project's `experiments/`
    (what `make bench` records); any other value is a path; null writes nothing. A user's own run
    never overwrites the project's committed results unless asked to."""
    output = cfg.output
    if output in (None, ""):
        return None
    if output == "auto":
        return str((run_dir or Path(".")) / spec.file_name())
    if output == "experiments":
        return str(Path(str(cfg.experiments_dir)) / spec.file_name())
    return str(output)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="benchmark")
@readable_errors
def main(cfg: DictConfig) -> float:
    spec = spec_from_config(cfg)
    OmegaConf.update(cfg, "output", resolve_output(cfg, spec, hydra_output_dir()), merge=False)
    return float(benchmark(cfg, spec=spec)["fps"])


if __name__ == "__main__":
    main()
