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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

    ``forward(logits_list, label)``: ``logits_list`` holds the heads' raw logits, decode first, then aux0..
    aux3, each at its own resolution (fewer heads allowed, e.g. only decode); ``label`` (N,H,W) int64.
    Returns a dict with one fp32 scalar per given head (``decode``, ``aux0``, ...), ``total`` (the weighted
    sum, the value to back-propagate) and ``acc`` (decode-head pixel accuracy in percent, detached).
    Heads are processed one after another so that only one upsampled (N,C,H,W) copy is alive outside
    autograd's saved tensors at a time.
    """

    def __init__(
        self,
        ohem: bool | None = None,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 10000,
        loss_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
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
            f"align_corners={self.align_corners}"
        )

    def head_loss(self, logits: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        """One head's loss (docs/reproduction.md#loss steps 1-3) and its upsampled fp32 logits."""
        with _no_autocast(logits.device):
            logits = logits.float()
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
