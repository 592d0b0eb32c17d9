"""How far an accelerated or exported model's answers are from the plain fp32 model's: the share of
pixels with the same class (argmax agreement) and the largest logit difference. One measure for the
fast path's self-check, `benchmark`, `make bench` and the tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

Net = Callable[[torch.Tensor], torch.Tensor]


def label_agreement(reference: Iterable[torch.Tensor], candidate: Iterable[torch.Tensor]) -> float:
    """Share of equal labels over pairs of label maps (any shape, pairwise equal)."""
    same = total = 0
    for a, b in zip(reference, candidate, strict=True):
        same += int((a.cpu() == b.cpu()).sum())
        total += a.numel()
    return same / max(total, 1)


@torch.no_grad()
def net_agreement(
    reference: Net | None,
    candidate: Net,
    images: Sequence[torch.Tensor],
    reference_labels: Sequence[torch.Tensor] | None = None,
) -> float:
    """Argmax agreement of two nets' full-resolution logits on `images`; `reference_labels` (one per
    image) stand in for `reference`, to compare several candidates against one reference pass."""
    if reference_labels is None:
        assert reference is not None
        reference_labels = [reference(x).argmax(1) for x in images]
    return label_agreement(reference_labels, (candidate(x).argmax(1) for x in images))


@torch.no_grad()
def max_logit_difference(reference: Net, candidate: Net, images: Sequence[torch.Tensor]) -> float:
    """Max abs difference of the full-resolution logits."""
    return max(float((reference(x).float() - candidate(x).float()).abs().max()) for x in images)


__all__ = ["label_agreement", "max_logit_difference", "net_agreement"]
