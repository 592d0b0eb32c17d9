"""`python -m bisenet_pl.export ckpt=PATH out=model.onnx [format=onnx|openvino|onnx-int8|openvino-int8]`.

format=onnx (the default) writes one self-contained `.onnx` file and its sidecar `<out>.json`, then runs
the file in ONNX Runtime on two input sizes (by default 1x3x512x1024 and a 2x3x360x648 batch, which is
not a multiple of 32) and compares it with the unfused PyTorch model; the export fails loudly, printing
the max abs difference, if any logit differs by more than `tolerance` (1e-4), and the failing file is
moved aside. The graph's contract is in `bisenet_pl.inference.onnx`.

format=openvino writes the same graph as an OpenVINO IR (`out=model.xml` + `model.bin` + sidecar) and
holds it to the same check (`check_fp32`, in OpenVINO). format=onnx-int8 / openvino-int8 quantize it,
calibrated on `calibration.images` images of the `data` config's train split, and write it only if its
val mIoU is within `gate.max_miou_drop` points of fp32 (`bisenet_pl.inference.quantize`).
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

from bisenet_pl.errors import BisenetError, CheckpointError, ConfigError  # noqa: E402
from bisenet_pl.inference.onnx import ExportError, check_onnx, export_onnx, opset_of, sidecar_path  # noqa: E402

log = logging.getLogger("bisenet_pl.export")

#: format= -> the file name's ending.
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "onnx-int8": ".onnx", "openvino-int8": ".xml"}


def _load(ckpt: str | None) -> tuple[Any, dict[str, Any]]:
    from bisenet_pl.inference.backends import load_net

    loaded = load_net(ckpt, "torch", "cpu")
    return loaded.model, loaded.meta


def export(cfg: DictConfig) -> dict[str, Any]:
    if cfg.out is None or str(cfg.out) == "":
        raise BisenetError("out=PATH is required (e.g. out=model.onnx)")
    out = Path(str(cfg.out))
    fmt = str(cfg.get("format", "onnx"))
    if fmt not in SUFFIXES:
        raise ConfigError(f"format={fmt}: choose one of {', '.join(SUFFIXES)}")
    if out.suffix != SUFFIXES[fmt]:
        raise BisenetError(f"out={out}: format={fmt} writes a file whose name ends in {SUFFIXES[fmt]}")
    if cfg.ckpt is not None and Path(str(cfg.ckpt)).suffix in (".onnx", ".xml"):
        raise CheckpointError(f"ckpt={cfg.ckpt} is already an exported file; give the PyTorch checkpoint")
    model, meta = _load(cfg.ckpt)
    if cfg.ckpt is not None:
        meta["source_checkpoint"] = str(cfg.ckpt)
    if fmt not in ("onnx", "onnx-int8") and (cfg.get("preprocess") or cfg.get("argmax")):
        raise ConfigError(
            f"preprocess=true / argmax=true are ONNX options (format=onnx|onnx-int8), not {fmt}"
        )
    from bisenet_pl.inference.baked import GraphContract, bake_in_place

    contract = GraphContract.from_options(
        bool(cfg.get("preprocess", False)), bool(cfg.get("argmax", False)), cfg.get("layout")
    )
    if fmt == "openvino":
        return export_openvino_ir(cfg, out, model, meta)
    if fmt != "onnx":
        result = export_int8_model(cfg, fmt, out, model, meta)
        if not contract.is_plain:  # the gated INT8 file, baked and held to its own answers
            checks = [tuple(int(v) for v in s) for s in cfg.check_shapes]
            result["baked"] = bake_in_place(out, contract, checks)
            print(f"baked {out}: {contract.describe(int(model.num_classes))['input']}")
        return result
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


def _move_aside(files: list[Path]) -> None:
    """Keep a failing export for inspection, never under the name a user would deploy."""
    for path in files:
        bad = path.with_name(path.name + ".failed")
        path.replace(bad)
        log.error("moved the failing export to %s", bad)


def export_openvino_ir(cfg: DictConfig, out: Path, model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """format=openvino: the IR (+ .bin + sidecar), then the fp32 check against PyTorch."""
    from bisenet_pl.inference.onnx import check_fp32
    from bisenet_pl.inference.openvino_net import OpenVinoNet, convert, ir_files, save_ir

    t0 = time.perf_counter()
    ov_model, full_meta = convert(model, meta, str(cfg.openvino_from), str(cfg.exporter), cfg.opset)
    full_meta.update({"format": "openvino", "precision": "fp32"})
    save_ir(ov_model, out, full_meta)
    seconds = time.perf_counter() - t0
    shapes = [tuple(int(v) for v in s) for s in cfg.check_shapes]
    try:
        diffs = check_fp32(
            OpenVinoNet(out), model, shapes, float(cfg.tolerance), where=str(out), runtime="openvino"
        )
    except ExportError:
        _move_aside(ir_files(out))
        raise
    size_mb = out.with_suffix(".bin").stat().st_size / 2**20
    print(
        f"wrote {out} + {out.with_suffix('.bin').name} ({size_mb:.1f} MB, {full_meta['converter']}, "
        f"{seconds:.1f} s) and {sidecar_path(out)}; OpenVINO matches PyTorch on {len(shapes)} input sizes "
        f"(max abs diff {max(diffs):.2g})"
    )
    return {
        "openvino": str(out),
        "sidecar": str(sidecar_path(out)),
        "max_abs_diff": diffs,
        "seconds": seconds,
    }


def export_int8_model(
    cfg: DictConfig, fmt: str, out: Path, model: Any, meta: dict[str, Any]
) -> dict[str, Any]:
    """format=onnx-int8|openvino-int8: calibrate on the data's train split, gate on its val split."""
    from hydra.utils import instantiate

    from bisenet_pl.checkpoints.meta import complete_meta
    from bisenet_pl.data.transforms import build_test_transform
    from bisenet_pl.inference.modes import InferenceConfig
    from bisenet_pl.inference.quantize import export_int8

    full = complete_meta(int(model.num_classes), meta)
    box = (
        tuple(full.get("test_scale") or (2048, 1024))
        if cfg.test_scale == "checkpoint"
        else tuple(cfg.test_scale)
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    if int(datamodule.num_classes) != int(model.num_classes):
        raise ConfigError(
            f"{cfg.ckpt} predicts {model.num_classes} classes but the data has {datamodule.num_classes}: "
            "calibrate and gate it on its own dataset (data=... data.root=...)"
        )
    transform = build_test_transform(box)
    splits = (str(cfg.calibration.split), str(cfg.gate.split))
    calibration = datamodule.make_dataset(splits[0], transform, False, False)
    validation = datamodule.make_dataset(splits[1], transform, False, True)
    inference = InferenceConfig.from_mode("whole", mean=tuple(full["mean"]), std=tuple(full["std"]), box=box)
    t0 = time.perf_counter()
    result = export_int8(
        model,
        out,
        fmt,
        calibration,
        validation,
        inference,
        ignore_index=int(datamodule.ignore_index),
        meta=meta,
        images=int(cfg.calibration.images),
        keep_float=[str(p) for p in cfg.calibration.keep_float],
        max_miou_drop=float(cfg.gate.max_miou_drop),
        exporter=str(cfg.exporter),
        opset=cfg.opset,
        gate_limit=cfg.gate.limit,
        splits=splits,
    )
    seconds = time.perf_counter() - t0
    weights = out if fmt == "onnx-int8" else out.with_suffix(".bin")
    print(
        f"wrote {out} ({weights.stat().st_size / 2**20:.1f} MB, {fmt}, calibrated on "
        f"{result.meta['calibration']['images']} {splits[0]} images, {seconds:.1f} s) and "
        f"{sidecar_path(out)}; "
        f"passed the gate (mIoU drop {result.gate.miou_drop:.2f} <= {result.gate.max_miou_drop:g} points)"
    )
    return {fmt: str(out), "sidecar": str(sidecar_path(out)), "gate": result.meta["gate"], "seconds": seconds}


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
