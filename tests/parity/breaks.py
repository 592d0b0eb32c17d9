"""Deliberate breaks, to show that the matching parity check fails: `BISENET_PARITY_BREAK=<name>`.

Each break patches one behaviour of bisenet_pl inside the test process (never the package's files),
and the conftest then writes no figures. Run e.g.
    BISENET_PARITY_BREAK=warmup_ratio .venv/bin/python -m pytest tests/parity -k training
"""

from __future__ import annotations

import importlib
import inspect


def _module_of(obj):
    return importlib.import_module(inspect.getmodule(obj).__name__)


def warmup_ratio(ours, mp):
    """The warm-up starts from x0.2 instead of mmseg's x0.1."""
    fn = ours.warmup_poly_lr
    mod = _module_of(fn)

    def broken(step, *args, **kwargs):
        kwargs["warmup_ratio"] = 0.2
        return fn(step, *args, **kwargs)

    mp.setattr(mod, "warmup_poly_lr", broken)
    mp.setitem(ours._cache, "warmup_poly_lr", broken)


def drop_flip(ours, mp):
    """ms+flip without the flipped passes."""
    cls = ours.InferenceConfig
    original = cls.from_mode.__func__

    def from_mode(c, mode, **overrides):
        cfg = original(c, mode, **overrides)
        cfg.flip = False
        return cfg

    mp.setattr(cls, "from_mode", classmethod(from_mode))


def ms_ratios(ours, mp):
    """ms+flip with the ratio list (0.5, 0.75, 1.0, 1.25, 1.5) instead of mmseg's six."""
    mod = _module_of(ours.InferenceConfig)
    mp.setattr(mod, "MS_SCALES", (0.5, 0.75, 1.0, 1.25, 1.5))


def ohem_decode_only(ours, mp):
    """OHEM on the decode head only (mmseg 1.x's reading), not on all five heads as v0.x."""
    cls = ours.MultiHeadLoss
    original = cls.head_loss

    def head_loss(self, logits, label):
        use = self.use_ohem
        if getattr(self, "_head_index", 0) > 0:
            self.use_ohem = False
        self._head_index = getattr(self, "_head_index", 0) + 1
        try:
            return original(self, logits, label)
        finally:
            self.use_ohem = use

    forward = cls.forward

    def reset_forward(self, *args, **kwargs):
        self._head_index = 0
        return forward(self, *args, **kwargs)

    mp.setattr(cls, "head_loss", head_loss)
    mp.setattr(cls, "forward", reset_forward)


def aux_conv_seg_normal(ours, mp):
    """Aux heads' conv_seg Normal(0, 0.01), as their init_cfg says (mmseg never applies it)."""
    cls = ours.Segmentor
    original = cls.__init__

    def init(self, *args, **kwargs):
        import torch

        original(self, *args, **kwargs)
        for head in self.aux_heads:
            torch.nn.init.normal_(head.conv_seg.weight, 0, 0.01)
            torch.nn.init.zeros_(head.conv_seg.bias)

    mp.setattr(cls, "__init__", init)


def no_optimizer_step(ours, mp):
    """A network that never learns: every training step runs forward and backward, but the optimiser
    updates no weight (its `step` only evaluates the closure)."""
    cls = ours.SegmentationModule
    original = cls.configure_optimizers

    def configure_optimizers(self):
        import torch

        config = original(self)
        optimizer = config["optimizer"]

        def step(closure=None):
            optimizer._opt_called = True  # as torch's LR-scheduler wrapper of `step` marks it
            if closure is not None:
                with torch.enable_grad():
                    return closure()
            return None

        optimizer.step = step
        return config

    mp.setattr(cls, "configure_optimizers", configure_optimizers)


def _train_transform_with(ours, mp, **changes):
    fn = ours.build_train_transform
    mod = _module_of(fn)

    def broken(*args, **kwargs):
        kwargs.update(changes)
        return fn(*args, **kwargs)

    mp.setattr(mod, "build_train_transform", broken)
    mp.setitem(ours._cache, "build_train_transform", broken)


def aug_ratio_range(ours, mp):
    """The training resize ratio drawn from U[0.5, 1.5) instead of mmseg's U[0.5, 2.0)."""
    _train_transform_with(ours, mp, ratio_range=(0.5, 1.5))


def aug_no_flip(ours, mp):
    """The training pipeline never flips (flip probability 0 instead of 0.5)."""
    _train_transform_with(ours, mp, flip_prob=0.0)


def aug_no_cat_max(ours, mp):
    """The training crop without the class-ratio retry rule (cat_max_ratio 1.0 instead of 0.75)."""
    _train_transform_with(ours, mp, cat_max_ratio=1.0)


BREAKS = {
    f.__name__: f
    for f in (
        warmup_ratio,
        drop_flip,
        ms_ratios,
        ohem_decode_only,
        aux_conv_seg_normal,
        no_optimizer_step,
        aug_ratio_range,
        aug_no_flip,
        aug_no_cat_max,
    )
}
