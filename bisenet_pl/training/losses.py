"""Training loss: mmseg's per-head cross-entropy, OHEM pixel sampling and the 5-head sum
(docs/reproduction.md#loss).

What decides the number, and therefore is reproduced literally:

- **Divisor** (docs/reproduction.md#loss): mmseg's ``CrossEntropyLoss(avg_non_ignore=False)`` computes the
per-pixel
  CE (ignored pixels give 0), multiplies by the optional OHEM weight, and takes the *mean over all* N·H·W
  pixels, ignored and OHEM-dropped ones included. PyTorch's default ``reduction="mean"`` divides by the
  number of non-ignored pixels instead, which is a different (larger) loss and gradient scale.
- **Resolution** (docs/reproduction.md#loss): every head's logits are cast to fp32 and upsampled bilinearly
  (``align_corners=False``) to the label size *before* the loss, even aux head 3's 32x32 logits.
- **fp32** (docs/reproduction.md#loss): v0.x decorates the loss with ``force_fp32``; here autocast is
disabled and the
  logits are cast to float before the resize, so AMP runs give the same loss computation.
- **OHEM** (docs/reproduction.md#ohem): per head, from that head's own upsampled logits, under ``no_grad``;
v0.x put a sampler
  on all five heads (docs/reproduction.md#ohem).

How it is computed (``MultiHeadLoss(impl=...)``) changes no formula: ``"mmseg"`` calls the ops mmseg
calls (``F.interpolate`` and ``F.cross_entropy`` on NCHW maps, autograd's backward); ``"fused"`` (the
default) computes the same upsampling, log-softmax, per-pixel CE and its exact gradient
``(softmax - onehot) x dL/dCE`` over channels-last maps in one autograd step, into buffers it reuses
from step to step (`_UpsampledCrossEntropy`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

HEAD_NAMES: tuple[str, ...] = ("decode", "aux0", "aux1", "aux2", "aux3")


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def _check_pair(logits: Tensor, label: Tensor) -> None:
    if logits.dim() != 4 or label.dim() != 3:
        raise ValueError(
            f"Expected logits (N,C,H,W) and label (N,H,W); got {tuple(logits.shape)}, {tuple(label.shape)}."
        )
    if logits.shape[0] != label.shape[0] or logits.shape[-2:] != label.shape[-2:]:
        raise ValueError(
            f"Logits {tuple(logits.shape)} and label {tuple(label.shape)} differ in batch or spatial size; "
            "upsample the logits to the label size first (MultiHeadLoss does)."
        )


def _check_label_pair(logits: Tensor, label: Tensor) -> None:
    if logits.dim() != 4 or label.dim() != 3 or logits.shape[0] != label.shape[0]:
        raise ValueError(
            f"Expected logits (N,C,h,w) and label (N,H,W) of one batch; got {tuple(logits.shape)}, "
            f"{tuple(label.shape)}."
        )


def cross_entropy_all_pixels(
    logits: Tensor, label: Tensor, weight: Tensor | None = None, ignore_index: int = 255
) -> Tensor:
    """mmseg's CE (docs/reproduction.md#loss): per-pixel CE (ignored -> 0) x optional weight, summed /
    (N·H·W).

    ``logits`` (N,C,H,W) must already be at the label size; ``label`` (N,H,W) int64; ``weight`` (N,H,W)
    (e.g. OHEM's 0/1 mask). The divisor counts ALL pixels, including ``ignore_index`` pixels and pixels
    whose weight is 0 (avg_non_ignore=False, docs/reproduction.md#loss). Computed in fp32 with autocast
    disabled.
    """
    _check_pair(logits, label)
    with _no_autocast(logits.device):
        per_pixel = F.cross_entropy(logits.float(), label.long(), reduction="none", ignore_index=ignore_index)
        if weight is not None:
            if weight.shape != per_pixel.shape:
                raise ValueError(
                    f"weight must have shape {tuple(per_pixel.shape)}, got {tuple(weight.shape)}."
                )
            per_pixel = per_pixel * weight.float()
        # mean() over the N·H·W per-pixel tensor == sum / (N·H·W): mmseg's weight_reduce_loss('mean').
        return per_pixel.mean()


@torch.no_grad()
def ohem_weights(
    logits: Tensor, label: Tensor, thresh: float | None, min_kept: int, ignore_index: int = 255
) -> Tensor:
    """OHEM pixel weights (0./1., float32, shape (N,H,W)) exactly as mmseg's OHEMPixelSampler
    (docs/reproduction.md#ohem).

    ``logits`` (N,C,H,W) are the head's logits already upsampled to the label size; ``label`` (N,H,W).

    - ``batch_kept = min_kept * N`` (N = this process's batch; nothing is synchronised across GPUs).
    - Pixels labelled ``ignore_index`` always get 0.
    - With ``thresh``: p = softmax prob of the GT class; ``min_threshold`` = the valid probs sorted
      ascending, at 0-based index ``min(batch_kept, num_valid - 1)`` (0.0 without valid pixels);
      ``threshold = max(min_threshold, thresh)``; weight 1 where p < threshold (strictly). So every pixel
      with p < thresh is kept, and at least about ``batch_kept`` of the hardest ones. If
      ``batch_kept >= num_valid`` the threshold is the largest p and all valid pixels except those equal
      to the maximum are kept (docs/reproduction.md#ohem). The k-th smallest value is taken with ``kthvalue``
      instead of a
      full sort: the value at a sorted position is unique even with ties, so the mask is identical.
    - Without ``thresh``: rank valid pixels by per-pixel CE (descending) and keep the top ``batch_kept``.
      Among pixels tied at the cut the earlier ones (flattened N,H,W order) win: a stable sort, where
      mmseg's unstable ``sort`` leaves the choice unspecified.
    """
    _check_pair(logits, label)
    if min_kept < 0:
        raise ValueError(f"min_kept must be >= 0, got {min_kept}.")
    label = label.long()
    batch_kept = int(min_kept) * label.shape[0]
    valid = label != ignore_index
    weight = torch.zeros(label.shape, dtype=torch.float32, device=label.device)
    num_valid = int(valid.sum())
    if num_valid == 0:
        return weight
    with _no_autocast(logits.device):
        logits = logits.float()
        if thresh is not None:
            gather_label = label.masked_fill(~valid, 0).unsqueeze(1)
            prob = F.softmax(logits, dim=1).gather(1, gather_label).squeeze(1)  # (N,H,W); softmax freed
            valid_prob = prob[valid]
            k = min(batch_kept, num_valid - 1)
            min_threshold = valid_prob.kthvalue(k + 1).values  # == sorted ascending [k]
            # Python max() of a 0-d fp32 tensor and a float, then `prob < threshold`, as mmseg does: the
            # comparison happens in fp32 either way (the float is a weak scalar).
            threshold = cast("Tensor | float", max(min_threshold, thresh))
            weight[valid] = (valid_prob < threshold).float()
        else:
            losses = F.cross_entropy(logits, label, reduction="none", ignore_index=ignore_index)
            order = losses[valid].sort(descending=True, stable=True).indices
            valid_weight = torch.zeros(num_valid, dtype=torch.float32, device=label.device)
            valid_weight[order[:batch_kept]] = 1.0
            weight[valid] = valid_weight
    return weight


class _Buffers:
    """Full-size float buffers that the fused loss reuses from one step to the next (CPU only).

    A fresh tensor of the size of the upsampled logits (19 x 512 x 512 x batch 2: 40 MB) is, on CPU,
    fresh pages from the OS, which the kernel zeroes on first touch: measured on the 2-core benchmark
    machine, allocating and writing such a tensor costs 16 ms where writing an existing one costs 1 ms,
    so the page faults cost more than the arithmetic of the upsampling and the log-softmax together.
    A buffer is either here, free, or lent to exactly one user: `take` hands it out, `give` returns it.
    One that is never given back (a graph dropped without a backward) is simply freed with its user.
    On other devices `take` allocates as usual (a GPU's caching allocator already reuses memory).
    Not copied by `copy.deepcopy` or pickling: a copy starts empty.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.free: list[Tensor] = []

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        if like.device.type == "cpu":
            for i, buf in enumerate(self.free):
                if tuple(buf.shape) == shape and buf.dtype == like.dtype:
                    return self.free.pop(i)
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def give(self, buf: Tensor) -> None:
        if buf.device.type != "cpu":
            return
        self.free.append(buf)
        if len(self.free) > self.cap:
            self.free.pop(0)

    def clear(self) -> None:
        self.free.clear()

    def __deepcopy__(self, memo: dict[int, Any]) -> _Buffers:
        return _Buffers(self.cap)

    def __getstate__(self) -> dict[str, Any]:
        return {"cap": self.cap}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cap = int(state["cap"])
        self.free = []


class _UpsampledCrossEntropy(torch.autograd.Function):
    """mmseg's per-pixel CE of a head's upsampled logits, with its gradient computed in one pass.

    ``forward(logits, upsampled, label, ignore_index, align_corners, buffers)``: ``logits`` (N,C,h,w)
    are the head's fp32 logits (what the gradient is for); ``upsampled`` is
    ``F.interpolate(logits, (H, W), bilinear)``, an (N,C,H,W) tensor over channels-last memory (the caller
    computes it once, for OHEM and the accuracy too; when h, w == H, W it is the logits themselves); ``label``
    (N,H,W) int64. Returns the per-pixel CE (N,H,W), 0 at ``ignore_index``: ``F.nll_loss`` of the
    log-softmax over C, as ``F.cross_entropy(reduction="none")``.

    Backward, for g = dL/dCE per pixel: d/dx of ``-log_softmax(x)[y]`` is ``softmax(x) - onehot(y)``,
    so the upsampled logits' gradient is ``exp(log_softmax(x)) * g`` with ``g`` subtracted at the label
    (0 everywhere on an ignored pixel), then the bilinear upsampling's own backward
    (``upsample_bilinear2d_backward``) takes it to the head's resolution. This is the same formula,
    element by element, as autograd's chain of ``NllLoss2DBackward`` (-g at the label),
    ``LogSoftmaxBackward`` (``grad - exp(out) * sum(grad)``, with ``sum(grad) = -g``) and
    ``UpsampleBilinear2DBackward``; it differs from it in the last bit only, where the two ``exp``
    routines round differently (torch.exp and the log-softmax kernel's own), and in the upsampling's
    and the log-softmax's summation order over NHWC instead of NCHW memory. Measured against the
    previous path (`MultiHeadLoss(impl="mmseg")`) at batch 2 of 512x512: the five losses equal, the heads'
    gradients within 5e-7 of their largest value, every network parameter's gradient within 5e-7 after
    a float64 step (tests/training/test_losses.py, tests/training/test_step_speedups.py).
    What it saves, per head on the benchmark's CPU: the full-size NCHW gradient that
    ``nll_loss2d_backward`` allocates and zero-fills (twice), a separate ``exp`` pass, the slow NCHW
    upsampling backward (30 ms against 7 ms for the NHWC one) and, through ``buffers``, the page faults
    of fresh 40 MB tensors.

    The log-softmax is kept for backward in a buffer taken from ``buffers`` and handed back there when
    backward has used it (it becomes the gradient in place), so backward can run once: a second
    backward through the same graph (``retain_graph=True``) raises.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: Tensor,
        upsampled: Tensor,
        label: Tensor,
        ignore_index: int,
        align_corners: bool,
        buffers: _Buffers,
    ) -> Tensor:
        n, c, h, w = upsampled.shape
        rows = upsampled.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view: NHWC memory
        log_prob = buffers.take((n * h * w, c), rows)
        torch.log_softmax(rows, 1, out=log_prob)
        target = label.reshape(n * h * w)
        per_pixel = F.nll_loss(log_prob, target, reduction="none", ignore_index=ignore_index)
        state = cast(Any, ctx)
        state.log_prob, state.buffers = log_prob, buffers
        state.shapes = (tuple(logits.shape), (n, c, h, w))
        state.ignore_index, state.align_corners = ignore_index, align_corners
        ctx.save_for_backward(label)
        return per_pixel.view(n, h, w)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_per_pixel: Tensor) -> tuple[Tensor | None, ...]:
        state = cast(Any, ctx)
        log_prob = state.log_prob
        if log_prob is None:
            raise RuntimeError("the fused loss's backward runs once per forward (no retain_graph)")
        state.log_prob = None
        (label,) = cast(Any, ctx).saved_tensors
        low_shape, (n, c, h, w) = state.shapes
        target = label.reshape(-1)
        valid = target != state.ignore_index
        g = torch.where(valid, grad_per_pixel.reshape(-1), 0.0).unsqueeze(1)  # (NHW, 1)
        grad = log_prob.exp_().mul_(g)  # softmax x g, in place of the log-softmax
        grad.scatter_add_(1, target.masked_fill(~valid, 0).unsqueeze(1), g.neg())  # - g at the label
        grad_nchw = grad.view(n, h, w, c).permute(0, 3, 1, 2)
        if low_shape[-2:] != (h, w):
            grad_logits = torch.ops.aten.upsample_bilinear2d_backward(
                grad_nchw, [h, w], list(low_shape), state.align_corners, None, None
            )
        else:
            grad_logits = grad_nchw.clone()
        state.buffers.give(log_prob)
        return grad_logits, None, None, None, None, None


def pixel_accuracy(logits: Tensor, label: Tensor, ignore_index: int = 255) -> Tensor:
    """Top-1 accuracy in percent over non-ignored pixels (mmseg 1.x ``acc_seg``, docs/reproduction.md#loss),
    detached.

    NaN when there are no valid pixels. For logging only; it never enters the loss.
    """
    with torch.no_grad():
        valid = label != ignore_index
        n = int(valid.sum())
        if n == 0:
            return torch.tensor(math.nan, device=logits.device)
        correct = (logits.argmax(dim=1) == label) & valid
        return correct.sum().float() * (100.0 / n)


class MultiHeadLoss(nn.Module):
    """Sum of mmseg's per-head losses over the decode head and up to four aux heads
    (docs/reproduction.md#loss).

    Args:
        ohem: whether to apply OHEM pixel sampling on every head. ``None`` (default) means "OHEM iff
            ``ohem_thresh`` is given", so ``MultiHeadLoss()`` is plain CE and
            ``MultiHeadLoss(ohem_thresh=0.7, ohem_min_kept=10000)`` is the v0.x OHEM config (thresholded,
            on all five heads). ``ohem=True, ohem_thresh=None`` selects the loss-ranked variant (keep the
            ``min_kept * N`` highest-CE pixels, docs/reproduction.md#ohem). ``ohem=False`` is plain CE
            whatever
            ``ohem_thresh`` says (so a config can keep ``ohem_thresh: 0.7`` and toggle ``ohem``).
        ohem_thresh: probability threshold of the thresholded OHEM (mmseg config: 0.7).
        ohem_min_kept: minimum kept pixels per image (mmseg config: 10000); multiplied by the batch size.
        loss_weights: one weight per head, in the order decode, aux0..aux3 (default all 1.0,
        docs/reproduction.md#heads).
        ignore_index: label value excluded from the loss and always dropped by OHEM.
        align_corners: of the bilinear upsampling to the label size (mmseg: False).
        impl: how the upsampling and CE are computed; the same formulas either way (module docstring).
            ``"fused"`` (default): over channels-last (NHWC) maps, the CE's gradient in one pass
            (`_UpsampledCrossEntropy`), the full-size maps in buffers kept from one step to the next on
            CPU (one upsampled map plus one log-softmax per head: 6 x 40 MB at batch 2 of 512x512;
            `release_buffers` frees them). ``"mmseg"``: ``F.interpolate`` and ``F.cross_entropy`` on
            NCHW maps with autograd's backward, the ops mmseg calls. They agree to float rounding
            (tests: losses 1e-6, gradients 1e-5 relative; measured: equal losses, gradients 5e-7); the
            fused one costs less (on the benchmark's 2-core CPU, one thread, batch 2 of 512x512: 185
            against 700 ms for the five heads' upsampling, CE and accuracy, forward and backward).

    ``forward(logits_list, label)``: ``logits_list`` holds the heads' raw logits, decode first, then aux0..
    aux3, each at its own resolution (fewer heads allowed, e.g. only decode); ``label`` (N,H,W) int64.
    Returns a dict with one fp32 scalar per given head (``decode``, ``aux0``, ...), ``total`` (the weighted
    sum, the value to back-propagate) and ``acc`` (decode-head pixel accuracy in percent, detached).
    Heads are processed one after another so that only one upsampled (N,C,H,W) copy is alive outside
    autograd's saved tensors at a time.
    """

    IMPLS = ("fused", "mmseg")

    def __init__(
        self,
        ohem: bool | None = None,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 10000,
        loss_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
        align_corners: bool = False,
        impl: str = "fused",
    ) -> None:
        super().__init__()
        if impl not in self.IMPLS:
            raise ValueError(f"impl must be one of {self.IMPLS}, got {impl!r}.")
        use_ohem = (ohem_thresh is not None) if ohem is None else bool(ohem)
        if ohem_thresh is not None and not 0.0 <= float(ohem_thresh) <= 1.0:
            raise ValueError(f"ohem_thresh is a probability in [0, 1], got {ohem_thresh}.")
        if ohem_min_kept < 0:
            raise ValueError(f"ohem_min_kept must be >= 0, got {ohem_min_kept}.")
        weights = (
            tuple(float(w) for w in loss_weights) if loss_weights is not None else (1.0,) * len(HEAD_NAMES)
        )
        if len(weights) != len(HEAD_NAMES):
            raise ValueError(f"loss_weights needs {len(HEAD_NAMES)} values {HEAD_NAMES}, got {len(weights)}.")
        self.use_ohem = use_ohem
        self.ohem_thresh = None if ohem_thresh is None else float(ohem_thresh)
        self.ohem_min_kept = int(ohem_min_kept)
        self.loss_weights = weights
        self.ignore_index = int(ignore_index)
        self.align_corners = bool(align_corners)
        self.impl = impl
        # the fused path's reusable buffers: one upsampled map, one log-softmax per head
        self._upsampled = _Buffers(cap=1)
        self._log_probs = _Buffers(cap=len(HEAD_NAMES))

    def release_buffers(self) -> None:
        """Free the buffers the fused path keeps between steps (they come back at the next step)."""
        self._upsampled.clear()
        self._log_probs.clear()

    @property
    def ohem_mode(self) -> str:
        """``"none"``, ``"thresh"`` (docs/reproduction.md#ohem, the config's) or ``"loss_rank"``
        (docs/reproduction.md#ohem)."""
        if not self.use_ohem:
            return "none"
        return "thresh" if self.ohem_thresh is not None else "loss_rank"

    def extra_repr(self) -> str:
        return (
            f"ohem_mode={self.ohem_mode!r}, ohem_thresh={self.ohem_thresh}, "
            f"ohem_min_kept={self.ohem_min_kept}, "
            f"loss_weights={self.loss_weights}, ignore_index={self.ignore_index}, "
            f"align_corners={self.align_corners}, impl={self.impl!r}"
        )

    def head_loss(self, logits: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        """One head's loss (docs/reproduction.md#loss steps 1-3) and its upsampled fp32 logits.

        With ``impl="fused"`` the upsampled logits are channels-last and, when upsampled, live in a buffer
        the next ``head_loss`` call overwrites: read them before calling again (``forward`` does).
        """
        if self.impl == "fused":
            return self._fused_head_loss(logits, label)
        with _no_autocast(logits.device):
            logits = logits.float().contiguous()  # NCHW, as mmseg's heads hand them over
            if logits.shape[-2:] != label.shape[-2:]:
                logits = F.interpolate(
                    logits, size=label.shape[-2:], mode="bilinear", align_corners=self.align_corners
                )
            weight = None
            if self.use_ohem:
                weight = ohem_weights(
                    logits.detach(), label, self.ohem_thresh, self.ohem_min_kept, self.ignore_index
                )
            loss = cross_entropy_all_pixels(logits, label, weight=weight, ignore_index=self.ignore_index)
        return loss, logits

    def _fused_head_loss(self, logits: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        """`head_loss` through `_UpsampledCrossEntropy`: the same steps, over NHWC maps."""
        _check_label_pair(logits, label)
        label = label.long()
        with _no_autocast(logits.device):
            logits = logits.float().contiguous(memory_format=torch.channels_last)
            n, c = logits.shape[:2]
            h, w = label.shape[-2:]
            if logits.shape[-2:] != (h, w):
                buf = self._upsampled.take((n, h, w, c), logits)
                upsampled = buf.permute(0, 3, 1, 2)  # (N,C,H,W) over NHWC memory
                with torch.no_grad():  # an out= op; its gradient is _UpsampledCrossEntropy's backward
                    torch.ops.aten.upsample_bilinear2d.out(
                        logits, [h, w], self.align_corners, None, None, out=upsampled
                    )
                self._upsampled.give(buf)  # valid until the next head's upsampling
            else:
                upsampled = logits.detach()
            weight = None
            if self.use_ohem:
                weight = ohem_weights(
                    upsampled, label, self.ohem_thresh, self.ohem_min_kept, self.ignore_index
                )
            per_pixel = cast(
                Tensor,
                _UpsampledCrossEntropy.apply(
                    logits, upsampled, label, self.ignore_index, self.align_corners, self._log_probs
                ),
            )
            if weight is not None:
                per_pixel = per_pixel * weight
            # mean() over the N·H·W per-pixel tensor == sum / (N·H·W), as cross_entropy_all_pixels
            loss = per_pixel.mean()
        return loss, upsampled

    def forward(self, logits_list: Sequence[Tensor], label: Tensor) -> dict[str, Tensor]:
        if isinstance(logits_list, Tensor):
            logits_list = [logits_list]
        if not 1 <= len(logits_list) <= len(HEAD_NAMES):
            raise ValueError(f"Expected 1 to {len(HEAD_NAMES)} head outputs, got {len(logits_list)}.")
        if label.dim() != 3:
            raise ValueError(f"label must be (N,H,W), got shape {tuple(label.shape)}.")
        label = label.long()
        out: dict[str, Tensor] = {}
        total: Tensor | None = None
        for name, weight, logits in zip(HEAD_NAMES, self.loss_weights, logits_list, strict=False):
            loss, upsampled = self.head_loss(logits, label)
            if name == "decode":
                out["acc"] = pixel_accuracy(upsampled.detach(), label, self.ignore_index)
            del upsampled
            out[name] = loss
            term = loss * weight
            total = term if total is None else total + term
        assert total is not None
        out["total"] = total
        return out
