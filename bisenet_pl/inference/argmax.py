"""An exact, cheap bilinear upsample + argmax.

mmseg upsamples the C logit maps from 1/8 to full size and takes the argmax over C planes of every
pixel. Bilinear output is a convex combination of (at most) 4 low-resolution neighbours, so wherever
those neighbours share one argmax class, the full-resolution argmax is that class; only the pixels of
boundary cells need the interpolation. The labels equal the full path's, up to exact ties (and
last-bit differences at near-ties). Measured costs are in `experiments/bench_summary.md`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


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
#: pixel by pixel: the sparse path's cost grows with the boundary share and passes the dense one's at
#: about 15-20 % (the crossover measured by `benchmarks/inference_speed.py`).
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
            contiguously, which is much cheaper than an NCHW argmax over C planes).
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
