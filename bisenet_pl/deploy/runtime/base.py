"""The one interface every runtime keeps, and the questions callers may ask of a net.

A net is called with a normalised float32 (N, 3, H, W) batch and returns (N, C, H, W) logits at the
input size, as a `Segmentor` in eval mode does. Some nets can do more, and say so through these
optional members, asked here and nowhere else:

- `forward_logits(x)`: the 1/8-resolution logits, so the exact cheap upsample + argmax applies
  (a `Segmentor`, the accelerated torch paths, the low-resolution ONNX Runtime graph);
- `takes_uint8`: the graph normalises inside; it is better fed the original uint8 pixels;
- `returns_labels`: the graph ends in an argmax: it returns labels (as one-hot scores through
  `__call__`), so modes that average logits cannot use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Net(Protocol):
    """Normalised float (N, 3, H, W) -> float logits (N, C, H, W) at the input size."""

    def __call__(self, x: torch.Tensor, /) -> torch.Tensor: ...


def low_res_logits(net: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`net.forward_logits` (1/8 logits) when the net has one, else None."""
    forward = getattr(net, "forward_logits", None)
    return forward if callable(forward) else None


def takes_uint8(net: Any) -> bool:
    """Whether the net's graph normalises inside (and so prefers the original uint8 pixels)."""
    return bool(getattr(net, "takes_uint8", False))


def returns_labels(net: Any) -> bool:
    """Whether the net's graph ends in an argmax (labels, not logits)."""
    return bool(getattr(net, "returns_labels", False))


__all__ = ["Net", "low_res_logits", "returns_labels", "takes_uint8"]
