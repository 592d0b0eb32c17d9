"""`python -m bisenet_pl.export ckpt=PATH out=model.onnx`: ONNX export, checked against PyTorch.

Writes one self-contained `.onnx` file and its sidecar `<out>.json`, then runs the file in ONNX Runtime
on two input sizes (by default 1x3x512x1024 and a 2x3x360x648 batch, which is not a multiple of 32) and
compares it with the unfused PyTorch model; the export fails loudly, printing the max abs difference,
if any logit differs by more than `tolerance` (1e-4), and the failing file is moved aside. The graph's
contract is in `bisenet_pl.inference.onnx`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from bisenet_pl.cli import CONFIG_PATH, hydra_output_dir, quiet_environment, readable_errors

quiet_environment()

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from bisenet_pl.errors import BisenetError, CheckpointError  # noqa: E402
from bisenet_pl.inference.onnx import ExportError, check_onnx, export_onnx, opset_of, sidecar_path  # noqa: E402

log = logging.getLogger("bisenet_pl.export")


def _load(ckpt: str | None) -> tuple[Any, dict[str, Any]]:
    from bisenet_pl.inference.backends import load_net

    loaded = load_net(ckpt, "torch", "cpu")
    return loaded.model, loaded.meta


def export(cfg: DictConfig) -> dict[str, Any]:
    if cfg.out is None or str(cfg.out) == "":
        raise BisenetError("out=PATH is required (e.g. out=model.onnx)")
    out = Path(str(cfg.out))
    if out.suffix != ".onnx":
        raise BisenetError(f"out={out}: the file name must end in .onnx")
    if cfg.ckpt is not None and Path(str(cfg.ckpt)).suffix == ".onnx":
        raise CheckpointError(f"ckpt={cfg.ckpt} is already an ONNX file; give the PyTorch checkpoint")
    model, meta = _load(cfg.ckpt)
    if cfg.ckpt is not None:
        meta["source_checkpoint"] = str(cfg.ckpt)
    from bisenet_pl.inference.baked import GraphContract

    contract = GraphContract.from_options(
        bool(cfg.get("preprocess", False)), bool(cfg.get("argmax", False)), cfg.get("layout")
    )
    t0 = time.perf_counter()
    export_onnx(model, out, meta, exporter=str(cfg.exporter), opset=cfg.opset, contract=contract)
    seconds = time.perf_counter() - t0
    shapes = [tuple(int(v) for v in s) for s in cfg.check_shapes]
    try:
        diffs = check_onnx(out, model, shapes, float(cfg.tolerance))
    except ExportError:
        bad = out.with_name(out.name + ".failed")
        out.replace(bad)  # keep it for inspection, never under the name a user would deploy
        log.error("moved the failing export to %s", bad)
        raise
    size_mb = out.stat().st_size / 2**20
    print(
        f"wrote {out} ({size_mb:.1f} MB, opset {opset_of(out)}, {cfg.exporter} exporter, {seconds:.1f} s) "
        "and "
        f"{sidecar_path(out)}; onnxruntime matches PyTorch on {len(shapes)} input sizes "
        f"({'share of differing labels' if contract.argmax else 'max abs diff'} {max(diffs):.2g})"
    )
    return {"onnx": str(out), "sidecar": str(sidecar_path(out)), "max_abs_diff": diffs, "seconds": seconds}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
@readable_errors
def main(cfg: DictConfig) -> None:
    result = export(cfg)
    run_dir = hydra_output_dir()
    if run_dir is not None:
        (run_dir / "export.json").write_text(
            json.dumps({**result, "config": OmegaConf.to_container(cfg, resolve=True)}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
