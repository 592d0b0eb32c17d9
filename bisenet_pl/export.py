"""`python -m bisenet_pl.export ckpt=PATH out=model.onnx [format=onnx|openvino|onnx-int8|openvino-int8]`.

format=onnx (the default) writes one self-contained `.onnx` file and its sidecar `<out>.json`, then runs
it in ONNX Runtime on `check_shapes` (by default 1x3x512x1024 and a 2x3x360x648 batch, which is not a
multiple of 32) against the unfused PyTorch model: any logit more than `tolerance` (1e-4) off fails the
export loudly, and the failing file is moved aside. format=openvino writes the same graph as an OpenVINO
IR held to the same check. format=onnx-int8 / openvino-int8 quantize it, calibrated on the `data`
config's train split, and write it only if its val mIoU is within `gate.max_miou_drop` points of fp32.
`preprocess=true argmax=true` bake a graph that takes pixels and returns labels. The library is
`bisenet_pl.deploy`; docs/deploy.md has the contract and the checks.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from bisenet_pl.cli import (
    CONFIG_PATH,
    hydra_output_dir,
    quiet_environment,
    readable_errors,
    require_same_classes,
)

quiet_environment()

import hydra  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from bisenet_pl.deploy.contract import GraphContract, sidecar_path  # noqa: E402
from bisenet_pl.deploy.export.formats import check_request  # noqa: E402


def export(cfg: DictConfig) -> dict[str, Any]:
    fmt = str(cfg.get("format", "onnx"))
    out = check_request(cfg.out, fmt, cfg.ckpt, bool(cfg.preprocess or cfg.argmax))
    contract = GraphContract.from_options(bool(cfg.preprocess), bool(cfg.argmax), cfg.get("layout"))
    from bisenet_pl.inference.backends import load_net

    loaded = load_net(cfg.ckpt, "torch", "cpu")
    model: Any = loaded.model  # a Segmentor: load_net's torch backend
    meta = loaded.meta
    if cfg.ckpt is not None:
        meta["source_checkpoint"] = str(cfg.ckpt)
    shapes = [tuple(int(v) for v in s) for s in cfg.check_shapes]
    t0 = time.perf_counter()
    if fmt == "onnx":
        from bisenet_pl.deploy.export.onnx import opset_of, write_checked_onnx

        opts = {"exporter": str(cfg.exporter), "opset": cfg.opset, "contract": contract}
        diffs = write_checked_onnx(model, out, meta, shapes=shapes, tolerance=float(cfg.tolerance), **opts)
        what = "share of differing labels" if contract.argmax else "max abs diff"
        print(
            f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB, opset {opset_of(out)}, {cfg.exporter} "
            f"exporter, {time.perf_counter() - t0:.1f} s) and {sidecar_path(out)}; onnxruntime matches "
            f"PyTorch on {len(shapes)} input sizes ({what} {max(diffs):.2g})"
        )
        return {"onnx": str(out), "sidecar": str(sidecar_path(out)), "max_abs_diff": diffs}
    if fmt == "openvino":
        from bisenet_pl.deploy.export.openvino import write_checked_ir

        via, tolerance = str(cfg.openvino_from), float(cfg.tolerance)
        full, diffs = write_checked_ir(model, out, meta, via, str(cfg.exporter), cfg.opset, shapes, tolerance)
        weights = out.with_suffix(".bin")
        print(
            f"wrote {out} + {weights.name} ({weights.stat().st_size / 2**20:.1f} MB, {full['converter']}, "
            f"{time.perf_counter() - t0:.1f} s) and {sidecar_path(out)}; OpenVINO "
            f"matches PyTorch on {len(shapes)} input sizes (max abs diff {max(diffs):.2g})"
        )
        return {"openvino": str(out), "sidecar": str(sidecar_path(out)), "max_abs_diff": diffs}
    result = export_int8_model(cfg, fmt, out, model, meta)
    if not contract.is_plain:  # the gated INT8 file, baked and held to its own answers
        from bisenet_pl.deploy.export.bake import bake_in_place

        result["baked"] = bake_in_place(out, contract, shapes)
        print(f"baked {out}: {contract.describe(int(model.num_classes))['input']}")
    return result


def export_int8_model(
    cfg: DictConfig, fmt: str, out: Path, model: Any, meta: dict[str, Any]
) -> dict[str, Any]:
    """format=onnx-int8|openvino-int8: calibrate on the data's train split, gate on its val split."""
    from bisenet_pl.checkpoints.meta import complete_meta
    from bisenet_pl.data.preprocess import test_box
    from bisenet_pl.data.transforms import build_test_transform
    from bisenet_pl.deploy.export.quantize import export_int8
    from bisenet_pl.inference.compare import compare_on_split
    from bisenet_pl.inference.modes import InferenceConfig

    full = complete_meta(int(model.num_classes), meta)
    box = test_box(full, cfg.test_scale)
    (datamodule := instantiate(cfg.data)).prepare_data()
    require_same_classes(cfg.ckpt, list(full["classes"]), datamodule, "calibrate and gate it")
    transform = build_test_transform(box)
    split, gate_split = str(cfg.calibration.split), str(cfg.gate.split)
    inference = InferenceConfig.from_mode("whole", mean=tuple(full["mean"]), std=tuple(full["std"]), box=box)
    measure = partial(
        compare_on_split,
        dataset=datamodule.make_dataset(gate_split, transform, False, True),
        num_classes=int(model.num_classes),
        ignore_index=int(datamodule.ignore_index),
        inference=inference,
        split=gate_split,
        limit=cfg.gate.limit,
    )
    t0 = time.perf_counter()
    result = export_int8(
        model,
        out,
        fmt,
        datamodule.make_dataset(split, transform, False, False),
        measure,
        meta=meta,
        images=int(cfg.calibration.images),
        keep_float=[str(p) for p in cfg.calibration.keep_float],
        max_miou_drop=float(cfg.gate.max_miou_drop),
        exporter=str(cfg.exporter),
        opset=cfg.opset,
        calibration_split=split,
    )
    print(result.gate.line())
    weights = out if fmt == "onnx-int8" else out.with_suffix(".bin")
    print(
        f"wrote {out} ({weights.stat().st_size / 2**20:.1f} MB, {fmt}, calibrated on "
        f"{result.meta['calibration']['images']} {split} images, {time.perf_counter() - t0:.1f} s) and "
        f"{sidecar_path(out)}; passed the gate (mIoU drop {result.gate.miou_drop:.2f} <= "
        f"{result.gate.max_miou_drop:g} points)"
    )
    return {fmt: str(out), "sidecar": str(sidecar_path(out)), "gate": result.meta["gate"]}


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
