"""Learning-rate schedule: linear warm-up + poly decay, by iteration (docs/reproduction.md#schedule).

Two styles are offered because mmseg's two major versions differ slightly (docs/reproduction.md#schedule):

``style="mmcv"`` (default; mmseg v0.x / mmcv 1.x, which trained the released checkpoints)
    The warm-up *multiplies the poly curve itself* (mmcv's ``PolyLrUpdaterHook`` with
    ``warmup="linear"``). With ``t`` the 0-based iteration::

        poly(t) = (base_lr - min_lr) * (1 - t / max_steps) ** power + min_lr
        lr(t)   = poly(t) * (1 - (1 - t / warmup_steps) * (1 - warmup_ratio))   for t < warmup_steps
        lr(t)   = poly(t)                                                       for t >= warmup_steps

    e.g. lr(999) = 0.049675 and lr(1000) = 0.049719, never exactly 0.05.

``style="mmengine"`` (mmseg 1.x: ``LinearLR(start_factor=0.1, end=1000)`` then
``PolyLR(eta_min=1e-4, power=0.9, begin=1000, end=160000)``)
    mmengine's schedulers count ``total_iters = end - begin - 1`` steps, so the warm-up reaches the
    base LR at ``t = warmup_steps - 1`` and the poly reaches ``min_lr`` at ``t = max_steps - 1``::

        lr(t) = base_lr * (warmup_ratio + (1 - warmup_ratio) * t / (warmup_steps - 1))   for t < warmup_steps
        lr(t) = min_lr + (base_lr - min_lr)
                * (1 - (t - warmup_steps) / (max_steps - warmup_steps - 1)) ** power     for t >= warmup_steps

    (mmengine computes this in a chained, multiplicative form; the closed form above is its exact
    product and agrees to float rounding.)

Both formulas reproduce the table of LR values in docs/reproduction.md#schedule to 1e-6 at t = 0, 500,
999, 1000, 16000, 80000, 120000 and 159999 (checked in tests/training/test_schedules.py), the ground
truth they were derived from.
Past the end (t >= max_steps for mmcv, t >= max_steps - 1 for mmengine) the LR stays at ``min_lr``.

``build_warmup_poly_scheduler`` wraps the same function in a ``LambdaLR`` whose multiplier is a small
callable object holding only plain attributes: ``LambdaLR.state_dict()`` then stores those attributes
(it silently drops plain functions/lambdas), so a resumed run continues at the saved step and the
checkpoint stays loadable with ``torch.load(weights_only=True)`` (docs/libraries.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

Style = Literal["mmcv", "mmengine"]
STYLES: tuple[str, ...] = ("mmcv", "mmengine")


@dataclass(frozen=True)
class PolySchedule:
    """The curve's shape apart from its base LR (mmseg's Cityscapes values by default), checked once.

    The one list of the schedule's options: `warmup_poly_lr`, `WarmupPolyMultiplier` and
    `build_warmup_poly_scheduler` take them as keywords and hand them here.
    """

    max_steps: int = 160000
    warmup_steps: int = 1000
    warmup_ratio: float = 0.1
    power: float = 0.9
    min_lr: float = 1e-4
    style: Style = "mmcv"

    def __post_init__(self) -> None:
        for name, kind in (("max_steps", int), ("warmup_steps", int), ("warmup_ratio", float),
                           ("power", float), ("min_lr", float), ("style", str)):  # fmt: skip
            object.__setattr__(self, name, kind(getattr(self, name)))  # configs hand over e.g. 1e3
        if self.style not in STYLES:
            raise ValueError(f"Unknown LR schedule style {self.style!r}; expected one of {STYLES}.")
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}.")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}.")
        # A warm-up longer than the run is allowed, as in mmcv and mmengine: a short smoke run of a table
        # row (`trainer.max_steps=2`) simply stays in warm-up; `SegmentationModule` warns about it.
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}.")
        if self.power < 0:
            raise ValueError(f"power must be >= 0, got {self.power}.")
        if self.min_lr < 0:
            raise ValueError(f"min_lr must be >= 0, got {self.min_lr}.")

    def lr(self, step: int, base_lr: float) -> float:
        """LR at the 0-based iteration `step` (see the module docstring for the two formulas)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}.")
        if base_lr < 0:
            raise ValueError(f"base_lr must be >= 0, got {base_lr}.")
        t, min_lr, power = float(step), self.min_lr, self.power
        max_steps, warmup_steps, warmup_ratio = self.max_steps, self.warmup_steps, self.warmup_ratio
        if self.style == "mmcv":
            if step >= max_steps:
                return float(min_lr)
            poly = (base_lr - min_lr) * (1.0 - t / max_steps) ** power + min_lr
            if step < warmup_steps:
                return poly * (1.0 - (1.0 - t / warmup_steps) * (1.0 - warmup_ratio))
            return poly
        # mmengine: LinearLR over t = 0..warmup_steps-1, then PolyLR from t = warmup_steps.
        if step < warmup_steps:
            if warmup_steps == 1:  # LinearLR with a single step only applies start_factor.
                return base_lr * warmup_ratio
            return base_lr * (warmup_ratio + (1.0 - warmup_ratio) * t / (warmup_steps - 1))
        total = max_steps - warmup_steps - 1
        k = step - warmup_steps
        if k >= total:
            return float(min_lr)
        return min_lr + (base_lr - min_lr) * (1.0 - k / total) ** power


def warmup_poly_lr(step: int, base_lr: float = 0.05, **schedule: Any) -> float:
    """LR at the 0-based iteration ``step`` (the LR the optimiser uses for that iteration's update);
    `schedule`: `PolySchedule`'s options (max_steps, warmup_steps, warmup_ratio, power, min_lr, style)."""
    return PolySchedule(**schedule).lr(step, base_lr)


class WarmupPolyMultiplier:
    """``LambdaLR`` multiplier: ``warmup_poly_lr(step, ...) / base_lr``.

    A class with plain attributes (not a closure, a lambda or a dataclass) so that
    ``LambdaLR.state_dict()`` saves it as a plain dict, which round-trips through ``load_state_dict`` and
    ``torch.load(weights_only=True)``.
    """

    def __init__(self, base_lr: float, **schedule: Any) -> None:
        if base_lr <= 0:
            raise ValueError(f"base_lr must be > 0 for a multiplicative LR schedule, got {base_lr}.")
        self.base_lr = float(base_lr)
        # the attributes are exactly warmup_poly_lr's keyword arguments (and all this object holds)
        self.__dict__.update(dataclasses.asdict(PolySchedule(**schedule)))

    def __call__(self, step: int) -> float:
        return warmup_poly_lr(step, **self.__dict__) / self.base_lr

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__})"


def build_warmup_poly_scheduler(
    optimizer: torch.optim.Optimizer, base_lr: float | None = None, last_epoch: int = -1, **schedule: Any
) -> LambdaLR:
    """A ``LambdaLR`` that sets each param group's LR to ``warmup_poly_lr(k, base_lr=<group lr>, ...)``.

    Step it once per training iteration (Lightning ``interval="step"``): after ``k`` calls of
    ``scheduler.step()`` the LR equals ``warmup_poly_lr(k)`` (up to one float rounding of the
    ``base * (lr / base)`` product), so iteration ``k`` trains with mmseg's LR for iteration ``k``.

    ``base_lr`` is the optimiser's LR; it is taken from the param groups (``initial_lr`` when resuming,
    else ``lr``). Passing it is only a consistency check: a mismatch raises instead of silently
    training at another LR. ``min_lr`` is absolute, as in mmcv/mmengine, for every group.
    `schedule`: `PolySchedule`'s options.
    """
    lambdas: list[Callable[[int], float]] = []
    for i, group in enumerate(optimizer.param_groups):
        group_lr = float(group.get("initial_lr", group["lr"]))
        if base_lr is not None and not math.isclose(group_lr, base_lr, rel_tol=1e-12, abs_tol=0.0):
            raise ValueError(
                f"Param group {i} has lr={group_lr} but the schedule was given base_lr={base_lr}; "
                "set the optimizer's lr to the schedule's base_lr."
            )
        lambdas.append(WarmupPolyMultiplier(group_lr, **schedule))
    return LambdaLR(optimizer, lr_lambda=lambdas, last_epoch=last_epoch)
