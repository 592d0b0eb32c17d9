"""Faster inference with the same answers: fused BN, channels_last, bf16/fp16, ONNX Runtime, torch.compile.

Why each piece (`make bench` measures each against the plain fp32 eager model, in the same run:
`experiments/bench_summary.md`):

- `Segmentor.fuse()` folds every BN into its conv; logits within ~1e-5.
- channels_last (NHWC) lets oneDNN run its blocked convolutions without reordering activations, and
  makes the final argmax read each pixel's scores contiguously; same logits.
- bf16 autocast on a CPU with native bf16 instructions (avx512_bf16 / AMX), fp16 on CUDA. It moves the
  logits by ~1e-1, so it is used only when the argmax keeps >= 99.9 % agreement with fp32 eager
  (`fastest_net` checks the given model). The classifier stays fp32; `scope="heavy"` keeps the
  rounding-sensitive layers in fp32 too (`Segmentor.heavy_modules()`) and flips about half as many
  pixels.
- ONNX Runtime fp32 (`deploy.export.onnx.low_res_onnx_net`): its convolutions beat oneDNN's fp32 ones
  on some CPUs.
- `torch.compile` (inductor) is optional: a cold compile costs tens of seconds and it gains little
  over the channels_last eager model on CPU, so it is never picked automatically.

`FastNet` wraps a `Segmentor` with any combination of these and is a drop-in `net` for
`bisenet_pl.inference.modes` (`forward` returns fp32 logits at the input size; `forward_logits` the 1/8
logits, which `predict_labels(..., fast_argmax=True)` uses). `fastest_net(model, device)` picks the
fastest path that this machine supports and that keeps the guarantees; `Predictor(path, fast=True)` and
`python -m bisenet_pl.predict fast=true` use it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from bisenet_pl.data.preprocess import preprocess
from bisenet_pl.deploy.contract import FP32_TOLERANCE
from bisenet_pl.deploy.runtime.onnxruntime import LowResOnnxNet, onnxruntime_available
from bisenet_pl.evaluation.agreement import max_logit_difference, net_agreement
from bisenet_pl.hardware import supported_precisions

if TYPE_CHECKING:
    from bisenet_pl.models.segmentor import Segmentor

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


#: Argmax agreement with fp32 eager that every reduced-precision path keeps.
MIN_AGREEMENT = 0.999


#: What a reduced-precision path must reach in `fastest_net`'s self-check: half the flip budget. The
#: flip rate varies by +-30-50 % from frame to frame (measured on the demo model), so a path that only
#: just reaches 99.9 % on the check frames would miss it on others.
CHECK_AGREEMENT = 0.9995


#: The self-check's frame size never exceeds this area (a bound on the one-time cost).
CHECK_MAX_PIXELS = 512 * 1024


SCOPES = ("all", "heavy")


@dataclass(frozen=True)
class FastOptions:
    """One inference path. The default is the plain fp32 eager model, as mmseg runs it.

    `scope` says where a reduced `precision` applies: "all" (the backbone and decode head's convs under
    autocast; the classifier stays fp32) or "heavy" (only `Segmentor.heavy_modules()`). Ignored for fp32.
    """

    fuse: bool = False
    channels_last: bool = False
    precision: str = "fp32"
    compile: bool = False
    scope: str = "all"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")

    @property
    def name(self) -> str:
        parts = ["fused" if self.fuse else "unfused", "channels_last" if self.channels_last else "NCHW"]
        if self.precision == "fp32" or self.scope == "all":
            parts.append(self.precision)
        else:
            parts.append(f"{self.precision} (heavy convs)")
        if self.compile:
            parts.append("compiled")
        return " + ".join(parts)


class _Autocast(nn.Module):
    """Runs `module` under autocast; hands its output back in fp32 if `to_float` (for fp32 consumers)."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype, to_float: bool) -> None:
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype
        self.to_float = to_float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            y = self.module(x)
        return y.float() if self.to_float else y


def _wrap(root: nn.Module, path: str, wrapper: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    parent._modules[name] = wrapper  # works for attributes and Sequential/ModuleList indices alike


class FastNet(nn.Module):
    """A `Segmentor` prepared for inference along one `FastOptions` path; a `net` for `inference.py`.

    The model is deep-copied (fusing is in place and the caller's model must stay trainable/savable) and
    the aux heads are dropped from the copy (unused at inference, 11 of the 15 M parameters).

    `forward(x)` returns float32 logits at x's size, as `Segmentor.forward` in eval mode does;
    `forward_logits(x)` the float32 1/8 logits. The input may be NCHW or channels_last: it is converted.
    """

    def __init__(self, model: Segmentor, options: FastOptions | None = None, **kwargs: Any) -> None:
        super().__init__()
        options = options or FastOptions(**kwargs)
        self.options = options
        param = next(model.parameters())
        self.device = param.device
        if options.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 inference needs a CUDA device: PyTorch has no fast fp16 CPU convolutions")
        net = model.inference_copy(fuse=options.fuse)
        if options.channels_last:
            # Module.to takes memory_format at run time; torch's overloads leave it out.
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._global_dtype = None
        dtype = _DTYPES.get(options.precision)
        if dtype is not None and options.scope == "heavy":
            for path, to_float in model.heavy_modules().items():
                _wrap(net, path, _Autocast(net.get_submodule(path), self.device.type, dtype, to_float))
        elif dtype is not None:
            self._global_dtype = dtype
        self.model = net
        self.align_corners = bool(getattr(model, "align_corners", False))
        self.num_classes = int(getattr(model, "num_classes", 19))
        self._logits_fn = self._logits
        if options.compile:
            self._logits_fn = torch.compile(self._logits, dynamic=False)

    @property
    def name(self) -> str:
        return self.options.name

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._global_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._global_dtype)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            feats = self.model.forward_features(x)
        # The 1x1 classifier in fp32: its bf16/fp16 output rounding would cost agreement for 0.6 % of
        # the MACs.
        return self.model.decode_head.classify(feats.float())

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._logits_fn(x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.forward_logits(x)
        return F.interpolate(
            logits, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=self.align_corners
        )


def _check_images(device: torch.device, size: tuple[int, int], n: int = 2) -> list[torch.Tensor]:
    """`n` synthetic street frames, through the test preprocessing.

    Seeds differ from the synthetic dataset's (split index 7), so a self-check never sees the frames
    that the tests and benchmarks report agreement on.
    """
    from bisenet_pl.data.synthetic import render_scene

    return [
        preprocess(render_scene([7, 7, seed], size[0], size[1])["image"], None).to(device)
        for seed in range(n)
    ]


def check_size_for(model: nn.Module) -> tuple[int, int]:
    """The self-check's (H, W): the model's own test scale (`model.meta["test_scale"]`, (long, short)),
    shrunk to at most `CHECK_MAX_PIXELS` keeping the aspect ratio; 512x1024 when the model does not say.

    At its test scale the model sees what it was trained for; a smaller frame holds relatively more
    class boundaries, hence more near-ties, so shrinking only makes the check stricter.
    """
    scale = (getattr(model, "meta", None) or {}).get("test_scale")
    if not scale:
        return (512, 1024)
    long_side, short_side = max(scale), min(scale)
    h, w = int(short_side), int(long_side)
    if h * w > CHECK_MAX_PIXELS:
        f = (CHECK_MAX_PIXELS / (h * w)) ** 0.5
        h, w = int(h * f), int(w * f)
    return max(32, h // 32 * 32), max(32, w // 32 * 32)


def fastest_net(
    model: Segmentor,
    device: torch.device | str,
    check_size: tuple[int, int] | None = None,
    min_agreement: float = CHECK_AGREEMENT,
    allow_onnxruntime: bool = True,
    allow_compile: bool = False,
) -> tuple[FastNet | LowResOnnxNet, str]:
    """The fastest inference path for `model` on `device` that keeps the accuracy guarantees.

    Returns (net, name); `net` has `forward_logits`, so `predict_labels(..., fast_argmax=True)`
    applies. Candidates, fastest first (the order `make bench` measures; its numbers are in
    `experiments/bench_summary.md`):

    1. reduced precision, only where the hardware has fast kernels (`supported_precisions`): fp16, then
       bf16, on CUDA; bf16 on a CPU with native bf16; each first everywhere (`scope="all"`), then on the
       heavy convolutions only (`scope="heavy"`, `Segmentor.heavy_modules()`: 91 % of the MACs). The
       argmax may move, so the *given* model is self-checked once against its own fp32 eager output, on
       synthetic street frames (`check_size`, default `check_size_for(model)`: its test scale, at most
       512x1024, about 1 M pixels in all), and a path is taken only with >= `min_agreement`
       (`CHECK_AGREEMENT`, 99.95 %: half of the 99.9 % guarantee's flip budget, because the flip rate
       varies from frame to frame). A static rule could not know the model: how many pixels flip
       depends on how many near-ties its logits have.
    2. CPU only, if onnxruntime is installed: `LowResOnnxNet` (fused fp32 in ONNX Runtime). It is kept
       only if its logits are within `FP32_TOLERANCE` of the fp32 eager model's on a small frame.
    3. `FastNet` fused + channels_last fp32: always available; logits within ~1e-6 (tested).

    With `allow_compile=True` the chosen torch path is also `torch.compile`d (a cold start of tens of
    seconds on CPU; never chosen by default). Speed is not measured here: one-off timings on a shared
    machine are noise, and all candidates of one precision give the same answers.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    images: list[torch.Tensor] | None = None
    reference_labels: list[torch.Tensor] = []
    for precision in supported_precisions(device):
        if precision == "fp32":
            break
        for scope in SCOPES:
            options = FastOptions(fuse=True, channels_last=True, precision=precision, scope=scope)
            candidate = FastNet(model, options)
            if images is None:
                size = cast("tuple[int, int]", tuple(check_size)) if check_size else check_size_for(model)
                n = min(8, max(2, round(2 * CHECK_MAX_PIXELS / (size[0] * size[1]))))
                images = _check_images(device, size, n)
                with torch.no_grad():
                    reference_labels = [model(x).argmax(1) for x in images]
            agree = net_agreement(model, candidate, images, reference_labels=reference_labels)
            if agree >= min_agreement:
                log.info(
                    "fast path %s: argmax agreement %.3f %% with fp32 eager", candidate.name, 100 * agree
                )
                if allow_compile:
                    candidate = FastNet(model, FastOptions(True, True, precision, compile=True, scope=scope))
                return candidate, candidate.name
            log.info(
                "fast path %s: argmax agreement %.3f %% < %.2f %%: not used",
                candidate.name,
                100 * agree,
                100 * min_agreement,
            )
    if device.type == "cpu" and allow_onnxruntime and not allow_compile and onnxruntime_available():
        try:
            from bisenet_pl.deploy.export.onnx import low_res_onnx_net

            ort_net = low_res_onnx_net(model)
            diff = max_logit_difference(model, ort_net, _check_images(device, (128, 256), n=1))
        except Exception as e:  # an exporter or runtime that cannot handle the model: use torch
            log.info("fast path %s unavailable (%s: %s)", LowResOnnxNet.name, type(e).__name__, e)
        else:
            if diff <= FP32_TOLERANCE:
                return ort_net, ort_net.name
            log.info(
                "fast path %s: logits differ by %.3g > %g: not used", LowResOnnxNet.name, diff, FP32_TOLERANCE
            )
    candidate = FastNet(model, FastOptions(fuse=True, channels_last=True, compile=allow_compile))
    return candidate, candidate.name


__all__ = [
    "CHECK_AGREEMENT",
    "MIN_AGREEMENT",
    "PRECISIONS",
    "SCOPES",
    "FastNet",
    "FastOptions",
    "check_size_for",
    "fastest_net",
]
