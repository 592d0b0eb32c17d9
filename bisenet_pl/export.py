"""`python -m bisenet_pl.export ckpt=PATH out=model.onnx`: ONNX export, checked against PyTorch.

The exported graph is the fused (BN folded) fp32 model in eval mode, aux heads dropped:

- input `image`: (N, 3, H, W) float32, RGB normalised with the checkpoint's mean/std (the test
  pipeline's output, SPEC §9); N, H and W are dynamic;
- output `logits`: (N, num_classes, H, W) float32 at the input size (the decode head's 1/8 logits
  resized bilinearly, align_corners=False, as `Segmentor.forward` does in eval mode).

One self-contained `.onnx` file (weights inside, no `.onnx.data` side file). The meta that inference
needs (classes, palette, mean, std, test scale) is stored twice: in the model's `metadata_props`, so the
file alone suffices, and in a readable sidecar JSON `<out>.json` (e.g. `model.onnx.json`).

After writing, the file is run in ONNX Runtime on two input sizes (by default 1x3x512x1024 and a
2x3x360x648 batch, which is not a multiple of 32: it exercises dynamic batch, height and width and the
ceil-mode strides) and compared with the *unfused* PyTorch model; the export fails loudly, printing the
max abs difference, if any logit differs by more than `tolerance` (1e-4, the fp32 guarantee of issue 7).

`OnnxNet` wraps an exported file as a `net` for `bisenet_pl.inference`, so the evaluation path can run
on it: `python -m bisenet_pl.evaluate ckpt=model.onnx backend=onnxruntime`.

Exporters: `exporter=dynamo` (torch.export + onnxscript, torch's default and supported path; ~5-10 s
here) or `exporter=torchscript` (the legacy tracer: <1 s, deprecated by torch but still shipped).
Both give the same graph semantics; the check runs either way.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bisenet_pl.cli import hydra_output_dir, quiet_environment, readable_errors

quiet_environment()

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from bisenet_pl.errors import BisenetError, CheckpointError  # noqa: E402

log = logging.getLogger("bisenet_pl.export")

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
META_KEY = "bisenet_pl"
DEFAULT_CHECK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 512, 1024), (2, 3, 360, 648))
EXPORTERS = ("dynamo", "torchscript")


class ExportError(BisenetError):
    """The exported model is missing, unreadable or disagrees with PyTorch."""


def sidecar_path(onnx_path: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.json`: the readable meta written next to the model."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def _export_module(model: torch.nn.Module) -> torch.nn.Module:
    """A fused fp32 eval copy without aux heads on the CPU: what goes into the file."""
    net = copy.deepcopy(model).float().cpu().eval()
    if hasattr(net, "aux_heads"):
        net.aux_heads = torch.nn.ModuleList()
    if hasattr(net, "fuse"):
        net.fuse()
    return net


def _name_dims(path: Path, num_classes: int, meta: dict[str, Any]) -> None:
    """Readable dynamic-dim names (batch/height/width), the static class count, and the meta, in place.

    The exporters name dynamic dims themselves (`s77`, `Resizelogits_dim_1`...); fixed names make the
    contract visible to any ONNX tool (Netron, onnxruntime's `get_inputs()`).
    """
    import onnx

    proto = onnx.load(str(path))
    for value in (*proto.graph.input, *proto.graph.output):
        if value.name not in (INPUT_NAME, OUTPUT_NAME):
            continue
        dims = value.type.tensor_type.shape.dim
        for i, name in ((0, "batch"), (2, "height"), (3, "width")):
            dims[i].ClearField("dim_value")
            dims[i].dim_param = name
        dims[1].ClearField("dim_param")
        dims[1].dim_value = 3 if value.name == INPUT_NAME else num_classes
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def export_onnx(
    model: torch.nn.Module,
    out: str | Path,
    meta: dict[str, Any] | None = None,
    exporter: str = "dynamo",
    opset: int | None = None,
    example_size: Sequence[int] = (256, 512),
) -> Path:
    """Write `model` (a Segmentor; fused on a copy) to `out` as one self-contained ONNX file + sidecar.

    Returns the ONNX path. `meta` (classes, palette, mean, std, test_scale...) goes into the file's
    metadata and the sidecar JSON. `opset` defaults to the exporter's (18 dynamo, 17 torchscript).
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    from bisenet_pl.checkpoints import default_meta

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = _export_module(model)
    num_classes = int(getattr(net, "num_classes", 19))
    full_meta = {**default_meta(num_classes), **dict(meta or {})}
    full_meta.update(
        {
            "num_classes": num_classes,
            "input": f"{INPUT_NAME}: (N, 3, H, W) float32, RGB, normalised (x - mean) / std",
            "output": f"{OUTPUT_NAME}: (N, {num_classes}, H, W) float32 at the input size",
            "fused": True,
            "exporter": exporter,
            "torch": torch.__version__,
        }
    )
    x = torch.zeros(1, 3, int(example_size[0]), int(example_size[1]))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning, tracer warnings
        if exporter == "dynamo":
            from torch.export import Dim

            torch.onnx.export(
                net,
                (x,),
                str(out),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},),
                opset_version=opset,
                dynamo=True,
                external_data=False,  # one file: weights inside (13 MB), no model.onnx.data
                verbose=False,
            )
        else:
            dyn = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                net,
                (x,),
                str(out),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: dyn, OUTPUT_NAME: dyn},
                opset_version=opset or 17,
                dynamo=False,
            )
    stray = out.with_name(out.name + ".data")
    if stray.exists():  # never leave a second file that the .onnx silently depends on
        raise ExportError(
            f"{out}: the exporter wrote external weights to {stray}; expected one self-contained file"
        )
    full_meta["opset"] = _opset(out)
    _name_dims(out, num_classes, full_meta)
    sidecar_path(out).write_text(json.dumps(full_meta, indent=2) + "\n")
    return out


def _opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _providers(device: torch.device | str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ExportError(
                "device=cuda with backend=onnxruntime needs onnxruntime-gpu (CUDAExecutionProvider); "
                f"this onnxruntime has {', '.join(available)}"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None):
    """ONNX Runtime options shared by `OnnxNet` and the fast path's in-memory session.

    Intra-op threads default to torch's current count, so ORT and torch timings on a shared machine use
    the same cores. No spin-waiting after a run: spinning ORT threads would steal the cores from the torch
    ops that follow (upsample, argmax) and from anything else in the process (measured: 2-10x slowdowns
    of interleaved torch calls on 2 cores); the cost is microseconds of wake-up per run.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxNet:
    """An exported model in ONNX Runtime, callable like a Segmentor in eval mode: torch (N,3,H,W) ->
    torch logits (N,C,H,W) at the input size, on the input's device.

    Attributes: `num_classes`, `meta` (classes, palette, mean, std, maybe test_scale: from the sidecar
    JSON, else from the file's own metadata), `path`, `session`.

    Args:
        path: the `.onnx` file.
        device: "cpu" or "cuda" (needs onnxruntime-gpu).
        threads: ONNX Runtime intra-op threads; None = torch's current thread count, so ORT and torch
            timings on a shared machine use the same number of cores.
    """

    def __init__(
        self, path: str | Path, device: torch.device | str = "cpu", threads: int | None = None
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{path}: no such ONNX file (export one with `python -m bisenet_pl.export`)")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError(
                "backend=onnxruntime needs onnxruntime: pip install 'bisenet_pl[export]'"
            ) from None
        options = session_options(threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=_providers(device))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ExportError(f"{path}: ONNX Runtime cannot load it: {str(e).splitlines()[0]}") from None
        self.path = path
        self.device = torch.device(device)
        names = [i.name for i in self.session.get_inputs()]
        self.input_name = INPUT_NAME if INPUT_NAME in names else names[0]
        self.output_name = OUTPUT_NAME
        if OUTPUT_NAME not in [o.name for o in self.session.get_outputs()]:
            self.output_name = self.session.get_outputs()[0].name
        self.meta = self._read_meta()
        out_shape = self.session.get_outputs()[0].shape
        n = out_shape[1] if len(out_shape) > 1 and isinstance(out_shape[1], int) else None
        self.num_classes = int(n or self.meta.get("num_classes") or len(self.meta.get("classes", [])) or 19)

    def _read_meta(self) -> dict[str, Any]:
        side = sidecar_path(self.path)
        if side.is_file():
            try:
                return dict(json.loads(side.read_text()))
            except (OSError, ValueError) as e:
                raise ExportError(f"{side}: unreadable sidecar JSON ({e})") from None
        embedded = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        return dict(json.loads(embedded)) if embedded else {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(logits).to(x.device)


def check_onnx(
    path: str | Path,
    model: torch.nn.Module,
    shapes: Sequence[Sequence[int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> list[float]:
    """Max abs logit difference ONNX Runtime vs the (unfused) PyTorch model, per input shape.

    Raises `ExportError` (naming the shape and the difference) if a shape's output has the wrong shape
    or any logit differs by more than `tolerance`. Inputs are random normal images (what the network
    sees after normalisation); one generator seed for reproducibility.
    """
    onnx_net = OnnxNet(path, device="cpu")
    reference = copy.deepcopy(model).float().cpu().eval()
    g = torch.Generator().manual_seed(seed)
    diffs = []
    for shape in shapes:
        x = torch.randn(*[int(s) for s in shape], generator=g)
        with torch.no_grad():
            ref = reference(x)
        out = onnx_net(x)
        if out.shape != ref.shape:
            raise ExportError(
                f"{path}: input {tuple(shape)} gave logits {tuple(out.shape)}, PyTorch {tuple(ref.shape)}"
            )
        diff = float((out - ref).abs().max())
        diffs.append(diff)
        shape_str = "x".join(map(str, shape))
        print(f"check {shape_str}: max |onnxruntime - pytorch| = {diff:.3g} (tolerance {tolerance:g})")
        if not diff <= tolerance:  # also catches NaN
            raise ExportError(
                f"{path}: ONNX Runtime and PyTorch differ on a {shape_str} input: max abs logit "
                f"difference {diff:.3g} > tolerance {tolerance:g}. The exported file is wrong; not using it."
            )
    return diffs


def _load(ckpt: str | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    from bisenet_pl.checkpoints import default_meta, load_model
    from bisenet_pl.models import Segmentor

    if ckpt is None:
        log.warning("no ckpt given: exporting a freshly initialised model (random weights)")
        model = Segmentor().eval()
        return model, default_meta(model.num_classes)
    model = load_model(ckpt, device="cpu")
    meta = {**default_meta(model.num_classes), **dict(getattr(model, "meta", {}) or {})}
    return model, meta


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
    t0 = time.perf_counter()
    export_onnx(model, out, meta, exporter=str(cfg.exporter), opset=cfg.opset)
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
        f"wrote {out} ({size_mb:.1f} MB, opset {_opset(out)}, {cfg.exporter} exporter, {seconds:.1f} s) and "
        f"{sidecar_path(out)}; onnxruntime matches PyTorch on {len(shapes)} input sizes "
        f"(max abs diff {max(diffs):.2g})"
    )
    return {"onnx": str(out), "sidecar": str(sidecar_path(out)), "max_abs_diff": diffs, "seconds": seconds}


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
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
