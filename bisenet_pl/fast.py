"""Faster inference with the same answers: fused BN, channels_last, bf16/fp16, ONNX Runtime, torch.compile,
and an exact cheap upsample + argmax.

Why each piece (full predict path at 1x3x1024x2048 on this project's 2-core AMD EPYC CPU, torch
2.13.0+cpu, as a fraction of the plain fp32 eager model's ~2.0 s; `make bench` has the current numbers):

- `Segmentor.fuse()` folds every BN into its conv: 0.90x, logits within ~1e-5.
- channels_last (NHWC) lets oneDNN run its blocked convolutions without reordering activations, and
  makes the final argmax read each pixel's 19 scores contiguously: 0.61x with fusing, same logits.
- bf16 autocast on a CPU with native bf16 instructions (avx512_bf16 / AMX): 0.36x. It moves the logits
  by ~1e-1, so it is used only when the argmax keeps >= 99.9 % agreement with fp32 eager (`fastest_net`
  checks the given model). The classifier (`conv_seg`, 0.6 % of the MACs) stays fp32. bf16 on the
  heavy convolutions only (`scope="heavy"`, 91 % of the MACs) gives 0.41x and flips half as many
  pixels. fp16 autocast is the CUDA counterpart (PyTorch has no fast fp16 CPU convolutions).
- ONNX Runtime (`OrtNet`, fp32): 0.52x; its convolutions beat oneDNN's fp32 ones here by ~15 %.
- `upsample_argmax`: mmseg upsamples 19 logit maps from 1/8 to full size and takes the argmax over 19
  planes of 2 M pixels (~0.25-0.3 s here). Bilinear output is a convex combination of (at most) 4
  low-resolution neighbours, so wherever those neighbours share one argmax class, the full-resolution
  argmax is that class; only the pixels of boundary cells need the interpolation. The labels equal the
  full path's, up to exact ties (and last-bit differences at near-ties).
- `torch.compile` (inductor) is optional: a cold compile costs tens of seconds (ECOSYSTEM §8h) and it
  gained ~3 % over the channels_last eager model here, so it is never picked automatically.

`FastNet` wraps a `Segmentor` with any combination of these and is a drop-in `net` for
`bisenet_pl.inference` (`forward` returns fp32 logits at the input size; `forward_logits` the 1/8 logits,
which `inference.predict(..., fast_argmax=True)` uses). `fastest_net(model, device)` picks the fastest
path that this machine supports and that keeps the guarantees; `Segmenter(path, fast=True)` and
`python -m bisenet_pl.predict fast=true` use it.

fp32 cannot reach 0.5x on this CPU: 98.85 GMACs in ~1 s is ~200 GFLOP/s, the machine's fp32 ceiling
(ECOSYSTEM §8i); only bf16 can, within the agreement guarantee that the self-check enforces.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Argmax agreement with fp32 eager that every fast path keeps (issue 7's guarantee).
MIN_AGREEMENT = 0.999
#: What a reduced-precision path must reach in `fastest_net`'s self-check: half the flip budget. The
#: flip rate varies by +-30-50 % from frame to frame (measured on the demo model), so a path that only
#: just reaches 99.9 % on the check frames would miss it on others.
CHECK_AGREEMENT = 0.9995
#: The self-check's frame size never exceeds this area (1024x512 is ~1 s per frame in fp32 here).
CHECK_MAX_PIXELS = 512 * 1024


# --------------------------------------------------------------------------------------------------
# Exact, cheap bilinear upsample + argmax
# --------------------------------------------------------------------------------------------------


def _source_indices(
    out_size: int, in_size: int, align_corners: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(i0, i1, lambda1) per output index along one axis, as ATen's bilinear kernel computes them.

    align_corners=False: `src = max(0, (dst + 0.5) * in/out - 0.5)`; True: `src = dst * (in-1)/(out-1)`;
    `i0 = floor(src)`, `i1 = min(i0 + 1, in - 1)`, `lambda1 = src - i0`; all in float32 as ATen does for
    float inputs, so the same neighbours and weights are chosen.
    """
    dst = torch.arange(out_size, device=device, dtype=torch.float32)
    if align_corners:
        scale = torch.tensor((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0, dtype=torch.float32)
        src = dst * scale.to(device)
    else:
        scale = torch.tensor(float(in_size), dtype=torch.float32) / out_size
        src = ((dst + 0.5) * scale.to(device) - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=in_size - 1)
    i1 = (i0 + 1).clamp_(max=in_size - 1)
    lam = (src - i0).clamp_(0, 1)
    return i0, i1, lam


@functools.lru_cache(maxsize=32)
def _cached_indices(
    out_size: int, in_size: int, align_corners: bool, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _source_indices(out_size, in_size, align_corners, torch.device(device))


#: Above this share of boundary cells, `upsample_argmax` interpolates densely (channels_last) instead of
#: pixel by pixel. Measured at 1024x2048 on this project's 2-core CPU, quiet: the sparse path costs
#: 41 / 62 / 79 / 126 ms at 6 / 10 / 13 / 19 % boundary cells, the dense one ~122 ms, mmseg's NCHW
#: upsample + argmax ~245 ms. Under load the sparse path's many small ops suffer more, hence 15 %.
SPARSE_MAX_FRACTION = 0.15


def _uniform_cells(lab: torch.Tensor) -> torch.Tensor:
    """(N, h, w) bool: the cell (r, q) = {r, min(r+1, h-1)} x {q, min(q+1, w-1)} holds one class only.

    A cell holds the bilinear neighbours of every output pixel whose top-left source is (r, q)
    (zero-weight neighbours included, which is only conservative).
    """
    down = torch.cat([lab[:, 1:], lab[:, -1:]], dim=1)
    right = torch.cat([lab[:, :, 1:], lab[:, :, -1:]], dim=2)
    diag = torch.cat([down[:, :, 1:], down[:, :, -1:]], dim=2)
    return (lab == down) & (lab == right) & (lab == diag)


@torch.no_grad()
def upsample_argmax(
    logits: torch.Tensor,
    size: tuple[int, int] | torch.Size,
    align_corners: bool = False,
    sparse_max_fraction: float = SPARSE_MAX_FRACTION,
) -> torch.Tensor:
    """`F.interpolate(logits, size, mode="bilinear", align_corners=...).argmax(1)`, computed cheaply.

    Args:
        logits: (N, C, h, w) low-resolution scores (any float dtype; interpolated in float32).
        size: the output (H, W).
        sparse_max_fraction: up to this share of boundary cells, interpolate only at boundary pixels;
            above it, densely in channels_last (the argmax then reads each pixel's C scores
            contiguously: ~3x cheaper than mmseg's NCHW argmax over 19 planes of 2 M pixels).
    Returns:
        (N, H, W) int64 labels, equal to the full path's except where two classes tie exactly (or to
        the last float bit) at a pixel.

    Why it is exact: each output pixel is `sum_k w_k * logits[:, n_k]` over its 2x2 source neighbours
    n_k with weights w_k >= 0 summing to 1. If every n_k has argmax class c, then for every class j,
    `out_c - out_j = sum_k w_k (l_c(n_k) - l_j(n_k)) >= 0`. So the output's argmax is c, and only pixels
    whose 2x2 neighbourhood holds two or more classes need the interpolation. The low-res cells are
    tested once; each output pixel then costs an index lookup, and a boundary pixel four gathers of
    C scores and three lerps.
    """
    if logits.dim() != 4:
        raise ValueError(f"expected (N, C, h, w) logits, got shape {tuple(logits.shape)}")
    n, c, h, w = logits.shape
    H, W = int(size[0]), int(size[1])
    low = logits.float()
    lab = low.argmax(1)  # (n, h, w)
    if (h, w) == (H, W):
        return lab
    uniform = _uniform_cells(lab)
    boundary = 1.0 - float(uniform.float().mean())
    if logits.device.type != "cpu" or boundary > sparse_max_fraction:
        dense = low.contiguous(memory_format=torch.channels_last)
        return F.interpolate(dense, size=(H, W), mode="bilinear", align_corners=align_corners).argmax(1)
    small = torch.int16 if c < 2**15 - 1 else torch.int64
    cell = torch.where(uniform, lab, -1).to(small)
    dev = str(logits.device)
    y0, y1, ly = _cached_indices(H, h, bool(align_corners), dev)
    x0, x1, lx = _cached_indices(W, w, bool(align_corners), dev)
    out = cell.index_select(1, y0).index_select(2, x0)  # (n, H, W): the class, or -1 on boundaries
    nb, ib, jb = (out < 0).nonzero(as_tuple=True)
    if nb.numel():
        flat = low.permute(0, 2, 3, 1).reshape(n * h * w, c)  # one row of C scores per source pixel
        row0 = nb * (h * w) + y0[ib] * w
        row1 = nb * (h * w) + y1[ib] * w
        q0, q1 = x0[jb], x1[jb]
        wx = lx[jb].unsqueeze(1)
        top = torch.lerp(flat.index_select(0, row0 + q0), flat.index_select(0, row0 + q1), wx)
        bottom = torch.lerp(flat.index_select(0, row1 + q0), flat.index_select(0, row1 + q1), wx)
        out[nb, ib, jb] = torch.lerp(top, bottom, ly[ib].unsqueeze(1)).argmax(1).to(small)
    return out.long()


def boundary_fraction(logits: torch.Tensor) -> float:
    """Share of low-res cells whose 2x2 neighbourhood holds more than one class (what `upsample_argmax`
    interpolates). A diagnostic for benchmarks: ~1 for random logits, ~0.1-0.2 for the demo model."""
    return 1.0 - float(_uniform_cells(logits.argmax(1)).float().mean())


# --------------------------------------------------------------------------------------------------
# Fast network wrapper
# --------------------------------------------------------------------------------------------------


#: The BiSeNetV2 sub-modules that `scope="heavy"` runs in bf16/fp16, and whether each hands fp32 back.
#: They are 91 % of the MACs: the detail branch after its first conv (the first conv sees the raw image,
#: 1 % of the MACs but the most rounding-sensitive layer), the BGA's final 3x3 conv and the decode
#: head's 3x3 conv. The semantic branch (many small, depthwise layers: 6 % of the MACs but, rounded,
#: half of bf16's argmax flips), the BGA's gating and the classifier stay fp32. Measured on the demo
#: model (see `fastest_net`): 99.94 % argmax agreement instead of 99.81 % for bf16 everywhere.
HEAVY_MODULES: dict[str, bool] = {
    "backbone.detail.detail_branch.0.1": False,
    "backbone.detail.detail_branch.1": False,
    "backbone.detail.detail_branch.2": True,
    "backbone.bga.conv": True,
    "decode_head.convs": True,
}
SCOPES = ("all", "heavy")


@dataclass(frozen=True)
class FastOptions:
    """One inference path. The default is the plain fp32 eager model, as mmseg runs it.

    `scope` says where a reduced `precision` applies: "all" (the backbone and decode head's convs under
    autocast; the classifier stays fp32) or "heavy" (only `HEAVY_MODULES`). Ignored for fp32.
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


def has_modules(model: nn.Module, paths: dict[str, bool] | list[str]) -> bool:
    """Whether every dotted sub-module path exists in `model` (a BiSeNetV2 Segmentor has all of
    `HEAVY_MODULES`)."""
    try:
        for path in paths:
            model.get_submodule(path)
    except AttributeError:
        return False
    return True


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

    def __init__(self, model: nn.Module, options: FastOptions | None = None, **kwargs: object) -> None:
        super().__init__()
        options = options or FastOptions(**kwargs)  # type: ignore[arg-type]
        self.options = options
        param = next(model.parameters())
        self.device = param.device
        if options.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 inference needs a CUDA device: PyTorch has no fast fp16 CPU convolutions")
        net = copy.deepcopy(model).eval()
        if hasattr(net, "aux_heads"):
            net.aux_heads = nn.ModuleList()
        if options.fuse:
            net.fuse()
        if options.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self._global_dtype = None
        dtype = _DTYPES.get(options.precision)
        if dtype is not None and options.scope == "heavy":
            if not has_modules(net, HEAVY_MODULES):
                raise ValueError("scope='heavy' needs a BiSeNetV2 Segmentor (sub-modules in HEAVY_MODULES)")
            for path, to_float in HEAVY_MODULES.items():
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
        head = self.model.decode_head
        with self._autocast():
            feats = head.convs(self.model.backbone(x)[0])
        # The 1x1 classifier in fp32: its bf16/fp16 output rounding would cost agreement for 0.6 % of
        # the MACs (dropout is the identity in eval).
        return head.conv_seg(head.dropout(feats).float())

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._logits_fn(x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.forward_logits(x)
        return F.interpolate(
            logits, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=self.align_corners
        )


class _LowResLogits(nn.Module):
    """`forward` = the wrapped Segmentor's `forward_logits`: the graph ONNX Runtime runs for `OrtNet`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_logits(x)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OrtNet:
    """The fused fp32 model's 1/8 logits in ONNX Runtime (CPU), with the upsample and argmax in torch.

    Why: on this project's CPU, ONNX Runtime's fp32 convolutions (MLAS, NCHWc blocked layout, conv+ReLU
    fused) run BiSeNetV2 faster than PyTorch's oneDNN channels_last path, with the same logits to ~1e-5.
    The graph ends at the 1/8 logits so that `upsample_argmax` still applies; `forward` adds the bilinear
    upsample in torch, matching `Segmentor.forward`. The model is exported in memory (no file) with the
    TorchScript exporter, which takes about a second; torch.export's exporter (`python -m
    bisenet_pl.export`, for deployment files) takes 5-10 s, too slow for a constructor.
    """

    name = "fused + onnxruntime fp32"

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        import io
        import warnings

        import onnxruntime as ort

        net = copy.deepcopy(model).float().cpu().eval()
        if hasattr(net, "aux_heads"):
            net.aux_heads = nn.ModuleList()
        if hasattr(net, "fuse"):
            net.fuse()
        buffer = io.BytesIO()
        dyn = {0: "batch", 2: "height", 3: "width"}
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(
                _LowResLogits(net),
                (torch.zeros(1, 3, 64, 128),),
                buffer,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": dyn, "logits": dyn},
                opset_version=17,
                dynamo=False,
            )
        from bisenet_pl.export import session_options

        options = session_options(threads)
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.align_corners = bool(getattr(model, "align_corners", False))
        self.num_classes = int(getattr(model, "num_classes", 19))
        self.device = torch.device("cpu")

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(["logits"], {"image": array})
        return torch.from_numpy(logits).to(x.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.forward_logits(x)
        return F.interpolate(
            logits, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=self.align_corners
        )


# --------------------------------------------------------------------------------------------------
# What this machine supports, and the choice
# --------------------------------------------------------------------------------------------------


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 convolutions natively here (avx512_bf16 or AMX-BF16).

    `torch.ops.mkldnn._is_mkldnn_bf16_supported()` alone is also true on plain AVX-512 CPUs, where oneDNN
    emulates bf16 and is slower than fp32; so the CPU flags are checked too (Linux `/proc/cpuinfo`;
    elsewhere we cannot tell and say no).
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    flags = _cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def supported_precisions(device: torch.device | str) -> list[str]:
    """Precisions with fast kernels on `device`, fastest first: fp16 and bf16 on CUDA (bf16 where the GPU
    has it), bf16 on CPUs with native bf16, fp32 everywhere."""
    device = torch.device(device)
    if device.type == "cuda":
        out = ["fp16"]
        if torch.cuda.is_bf16_supported():
            out.append("bf16")
        return [*out, "fp32"]
    if device.type == "cpu" and cpu_has_native_bf16():
        return ["bf16", "fp32"]
    return ["fp32"]


def _check_images(device: torch.device, size: tuple[int, int], n: int = 2) -> list[torch.Tensor]:
    """`n` synthetic street frames (`bisenet_pl.data.synthetic`), normalised like the test pipeline.

    Seeds differ from the synthetic dataset's (split index 7), so a self-check never sees the frames
    that the tests and benchmarks report agreement on.
    """
    import numpy as np

    from bisenet_pl.data.cityscapes import MEAN, STD
    from bisenet_pl.data.synthetic import render_scene

    mean, inv_std = np.asarray(MEAN, np.float64), 1.0 / np.asarray(STD, np.float64)
    out = []
    for seed in range(n):
        rgb = render_scene([7, 7, seed], height=size[0], width=size[1])["image"]
        norm = ((rgb.astype(np.float32) - mean) * inv_std).astype(np.float32)
        out.append(torch.from_numpy(norm).permute(2, 0, 1).unsqueeze(0).contiguous().to(device))
    return out


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


@torch.no_grad()
def agreement(
    reference: nn.Module | None,
    candidate: nn.Module | OrtNet,
    images: list[torch.Tensor],
    reference_labels: list[torch.Tensor] | None = None,
) -> float:
    """Share of pixels where `candidate`'s full-resolution argmax equals `reference`'s (or the given
    `reference_labels`, one per image, to compare several candidates against one reference pass)."""
    if reference_labels is None:
        assert reference is not None
        reference_labels = [reference(x).argmax(1) for x in images]
    same = total = 0
    for x, a in zip(images, reference_labels, strict=True):
        b = candidate(x).argmax(1)
        same += int((a == b).sum())
        total += a.numel()
    return same / max(total, 1)


@torch.no_grad()
def max_logit_difference(
    reference: nn.Module, candidate: nn.Module | OrtNet, images: list[torch.Tensor]
) -> float:
    """Max abs difference of the full-resolution logits."""
    return max(float((reference(x).float() - candidate(x).float()).abs().max()) for x in images)


#: The fp32 guarantee of issue 7: logits within this of the plain fp32 eager model.
FP32_TOLERANCE = 1e-4


def fastest_net(
    model: nn.Module,
    device: torch.device | str,
    check_size: tuple[int, int] | None = None,
    min_agreement: float = CHECK_AGREEMENT,
    allow_onnxruntime: bool = True,
    allow_compile: bool = False,
) -> tuple[FastNet | OrtNet, str]:
    """The fastest inference path for `model` on `device` that keeps the accuracy guarantees.

    Returns (net, name); `net` has `forward_logits`, so `inference.predict(..., fast_argmax=True)`
    applies. Candidates, fastest first (the order `make bench` measures on this project's CPU):

    1. reduced precision, only where the hardware has fast kernels (`supported_precisions`): fp16, then
       bf16, on CUDA; bf16 on a CPU with native bf16; each first everywhere (`scope="all"`), then on the
       heavy convolutions only (`scope="heavy"`, `HEAVY_MODULES`: 91 % of the MACs). The argmax may
       move, so the *given* model is self-checked once against its own fp32 eager output, on synthetic
       street frames (`check_size`, default `check_size_for(model)`: its test scale, at most 512x1024;
       about 1 M pixels in all, ~1-3 s here), and a path is taken only with >= `min_agreement`
       (`CHECK_AGREEMENT`, 99.95 %: half of the 99.9 % guarantee's flip budget, because the flip rate
       varies from frame to frame). A static rule could not know the model: how many pixels flip
       depends on how many near-ties its logits have. The demo model (200 CPU steps on synthetic data)
       keeps 99.88-99.90 % with bf16 everywhere (refused) and 99.94-99.96 % with bf16 on the heavy convs
       (taken when >= 99.95 %: ~0.4x the plain model's time at 1024x2048 here, bf16 everywhere ~0.35x).
    2. CPU only, if onnxruntime is installed: `OrtNet` (fused fp32 in ONNX Runtime, ~1.2x faster than
       torch's channels_last fp32 here). It is kept only if its logits are within 1e-4 of the fp32
       eager model's on a small frame (one-time, ~0.1 s), the fp32 guarantee.
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
            if scope == "heavy" and not has_modules(model, HEAVY_MODULES):
                continue
            options = FastOptions(fuse=True, channels_last=True, precision=precision, scope=scope)
            candidate = FastNet(model, options)
            if images is None:
                size = tuple(check_size) if check_size else check_size_for(model)
                n = min(8, max(2, round(2 * CHECK_MAX_PIXELS / (size[0] * size[1]))))
                images = _check_images(device, size, n)  # type: ignore[arg-type]
                with torch.no_grad():
                    reference_labels = [model(x).argmax(1) for x in images]
            agree = agreement(model, candidate, images, reference_labels=reference_labels)
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
            ort_net = OrtNet(model)
            diff = max_logit_difference(model, ort_net, _check_images(device, (128, 256), n=1))
        except Exception as e:  # an exporter or runtime that cannot handle the model: use torch
            log.info("fast path %s unavailable (%s: %s)", OrtNet.name, type(e).__name__, e)
        else:
            if diff <= FP32_TOLERANCE:
                return ort_net, ort_net.name
            log.info("fast path %s: logits differ by %.3g > %g: not used", OrtNet.name, diff, FP32_TOLERANCE)
    candidate = FastNet(model, FastOptions(fuse=True, channels_last=True, compile=allow_compile))
    return candidate, candidate.name


__all__ = [
    "CHECK_AGREEMENT",
    "MIN_AGREEMENT",
    "PRECISIONS",
    "SPARSE_MAX_FRACTION",
    "FP32_TOLERANCE",
    "FastNet",
    "FastOptions",
    "HEAVY_MODULES",
    "OrtNet",
    "SCOPES",
    "agreement",
    "boundary_fraction",
    "check_size_for",
    "cpu_has_native_bf16",
    "fastest_net",
    "has_modules",
    "max_logit_difference",
    "onnxruntime_available",
    "supported_precisions",
    "upsample_argmax",
]
