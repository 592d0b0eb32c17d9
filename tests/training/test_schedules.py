"""LR schedule: the LR at selected iterations for both styles against the formulas of
docs/reproduction.md#schedule, written out here independently of the package, and the LambdaLR wrapper
(stepping, resume, checkpoint)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from bisenet_pl.training.schedules import WarmupPolyMultiplier, build_warmup_poly_scheduler, warmup_poly_lr

REPRODUCTION = Path(__file__).resolve().parents[2] / "docs" / "reproduction.md"
BASE, MIN, WARMUP, MAX, POWER = 0.05, 1e-4, 1000, 160000, 0.9


def _mmcv(t: int) -> float:
    """mmcv 1.x (mmseg v0.x): poly(t) = (base - min)(1 - t/max)^0.9 + min, and for t < warm-up the
    warm-up *multiplies* it by 1 - (1 - t/warmup)(1 - 0.1)."""
    poly = (BASE - MIN) * (1 - t / MAX) ** POWER + MIN
    return poly * (1 - (1 - t / WARMUP) * (1 - 0.1)) if t < WARMUP else poly


def _mmengine(t: int) -> float:
    """mmengine (mmseg 1.x): LinearLR(start_factor=0.1, begin=0, end=1000) then PolyLR(eta_min=1e-4,
    power=0.9, begin=1000, end=160000); each of mmengine's schedulers spans end - begin - 1 steps, so the
    warm-up reaches the base LR at t = 999 and the poly reaches eta_min at t = 159999."""
    if t < WARMUP:
        return BASE * (0.1 + 0.9 * t / (WARMUP - 1))
    return MIN + (BASE - MIN) * (1 - (t - WARMUP) / (MAX - WARMUP - 1)) ** POWER


STEPS = (0, 500, 999, 1000, 16000, 80000, 120000, 159999)
#: The same, rounded to 6 decimals (the mmcv column is the "LR curve" table of experiments/rows/*/README.md,
#: whose mmseg column the parity suite's check 4 compares over the whole schedule).
TABLE = {
    "mmengine": (0.005000, 0.027523, 0.050000, 0.050000, 0.045742, 0.026992, 0.014511, 0.000100),
    "mmcv": (0.005000, 0.027423, 0.049675, 0.049719, 0.045486, 0.026841, 0.014430, 0.000101),
}
FORMULA = {"mmcv": _mmcv, "mmengine": _mmengine}


@pytest.mark.parametrize("style", ["mmcv", "mmengine"])
def test_spec_table(style: str) -> None:
    for t, expected in zip(STEPS, TABLE[style], strict=True):
        got = warmup_poly_lr(t, style=style)
        assert got == pytest.approx(FORMULA[style](t), rel=1e-12), (style, t)
        assert round(FORMULA[style](t), 6) == expected  # the literal table is the formula's
        assert abs(got - expected) <= 5e-7 + 1e-12, (style, t, got, expected)


def test_the_cited_docs_section_exists_and_names_the_formulas() -> None:
    """docs/reproduction.md#schedule, which the module docstring cites, is there and states the curve."""
    text = REPRODUCTION.read_text()
    assert "\n## schedule\n" in text
    section = text.split("\n## schedule\n", 1)[1].split("\n## ", 1)[0]
    for fact in ("0.05", "1e-4", "160000", "0.9", "1000", "LinearLR", "PolyLR", "test_spec_table"):
        assert fact in section, fact


def test_default_style_is_mmcv() -> None:
    assert warmup_poly_lr(999) == warmup_poly_lr(999, style="mmcv")
    assert warmup_poly_lr(999) != warmup_poly_lr(999, style="mmengine")


def test_closed_forms_and_edges() -> None:
    # mmcv: warm-up multiplies the poly curve; t=1000 is pure poly.
    poly = lambda t: (0.05 - 1e-4) * (1 - t / 160000) ** 0.9 + 1e-4  # noqa: E731
    assert warmup_poly_lr(1000) == pytest.approx(poly(1000), rel=1e-15)
    assert warmup_poly_lr(250) == pytest.approx(poly(250) * (1 - 0.75 * 0.9), rel=1e-15)
    # mmengine: warm-up reaches exactly base at t=warmup-1, poly reaches exactly min at t=max-1.
    assert warmup_poly_lr(999, style="mmengine") == pytest.approx(0.05, rel=1e-15)
    assert warmup_poly_lr(159999, style="mmengine") == pytest.approx(1e-4, rel=1e-15)
    # Clamped past the end.
    for style in ("mmcv", "mmengine"):
        assert warmup_poly_lr(160000, style=style) == 1e-4
        assert warmup_poly_lr(10**7, style=style) == 1e-4
    # Monotone decrease after warm-up.
    lrs = [warmup_poly_lr(t) for t in range(1000, 160001, 997)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    with pytest.raises(ValueError):
        warmup_poly_lr(-1)
    with pytest.raises(ValueError):
        warmup_poly_lr(0, style="linear")  # type: ignore[arg-type]


def test_no_warmup() -> None:
    assert warmup_poly_lr(0, warmup_steps=0) == pytest.approx(0.05)
    assert warmup_poly_lr(0, warmup_steps=0, style="mmengine") == pytest.approx(0.05)


def _opt(lr: float = 0.05) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


CFG = dict(max_steps=1500, warmup_steps=100, warmup_ratio=0.1, power=0.9, min_lr=1e-4)


@pytest.mark.parametrize("style", ["mmcv", "mmengine"])
def test_scheduler_matches_function(style: str) -> None:
    opt = _opt()
    sched = build_warmup_poly_scheduler(opt, base_lr=0.05, style=style, **CFG)
    for k in range(1200):
        expected = warmup_poly_lr(k, base_lr=0.05, style=style, **CFG)
        assert math.isclose(opt.param_groups[0]["lr"], expected, rel_tol=1e-13), (k, style)
        opt.step()
        sched.step()


@pytest.mark.parametrize("style", ["mmcv", "mmengine"])
def test_state_dict_round_trip_and_weights_only(style: str) -> None:
    opt = _opt()
    sched = build_warmup_poly_scheduler(opt, style=style, **CFG)
    for _ in range(150):
        opt.step()
        sched.step()
    state = sched.state_dict()
    # The multiplier is saved as its attributes (a plain dict), not dropped.
    assert state["lr_lambdas"][0] == WarmupPolyMultiplier(0.05, style=style, **CFG).__dict__
    buf = io.BytesIO()
    torch.save({"sched": state, "opt": opt.state_dict()}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)

    # Resume as Lightning does: build optimiser + scheduler (here with *different* schedule args), then
    # load the optimiser state, then the scheduler state, which must restore the saved schedule args.
    opt2 = _opt()
    sched2 = build_warmup_poly_scheduler(opt2, style=style, **dict(CFG, max_steps=99999))
    opt2.load_state_dict(loaded["opt"])
    sched2.load_state_dict(loaded["sched"])
    assert sched2.last_epoch == 150
    assert sched2.lr_lambdas[0].max_steps == 1500
    for k in range(150, 400):
        assert math.isclose(
            opt2.param_groups[0]["lr"], warmup_poly_lr(k, style=style, **CFG), rel_tol=1e-13
        ), k
        opt2.step()
        sched2.step()


def test_base_lr_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="base_lr"):
        build_warmup_poly_scheduler(_opt(0.01), base_lr=0.05)


def test_per_group_base_lr() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 0.05}, {"params": [p2], "lr": 0.01}], lr=0.05)
    sched = build_warmup_poly_scheduler(opt, **CFG)
    for _ in range(500):
        opt.step()
        sched.step()
    assert math.isclose(opt.param_groups[0]["lr"], warmup_poly_lr(500, base_lr=0.05, **CFG), rel_tol=1e-13)
    assert math.isclose(opt.param_groups[1]["lr"], warmup_poly_lr(500, base_lr=0.01, **CFG), rel_tol=1e-13)
