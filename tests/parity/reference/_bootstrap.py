"""Import mmsegmentation 1.2.2 on mmcv-lite: runs in the parity venv only, never in ours.

mmcv-lite ships no compiled ops, but `mmseg.utils` (and a few heads/losses BiSeNetV2 never uses)
import names from `mmcv.ops` at import time. A stand-in module is registered first: any name can be
imported from it, and using one raises, so a reference result can never silently come from a stub.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


class _Unavailable:
    """What every `mmcv.ops` name is here: importable, unusable."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("mmcv.ops is a stand-in in the parity venv (mmcv-lite has no compiled ops)")

    def __call__(self, *args, **kwargs):
        raise RuntimeError("mmcv.ops is a stand-in in the parity venv (mmcv-lite has no compiled ops)")


def _install_ops_stub() -> None:
    if "mmcv.ops" in sys.modules:
        return
    try:
        real = importlib.util.find_spec("mmcv._ext")
    except (ImportError, ValueError):
        real = None
    if real is not None:  # a full mmcv: use its real ops
        return
    import mmcv

    stub = types.ModuleType("mmcv.ops")
    stub.__getattr__ = lambda name: _Unavailable if not name.startswith("__") else None  # type: ignore[attr-defined]
    stub.__path__ = []  # a package, so `from mmcv.ops.x import y` fails loudly instead of half-working
    sys.modules["mmcv.ops"] = stub
    mmcv.ops = stub  # type: ignore[attr-defined]


_install_ops_stub()

import mmseg  # noqa: E402
from mmengine.config import Config, ConfigDict  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

register_all_modules(init_default_scope=True)

CONFIG_DIR = Path(mmseg.__file__).parent / ".mim" / "configs"
BISENET_CONFIG = CONFIG_DIR / "bisenetv2" / "bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py"


def _revert_syncbn(obj):
    """The config's SyncBN -> BN (one process, CPU), everywhere in a config tree."""
    if isinstance(obj, dict):
        return {k: ("BN" if k == "type" and v == "SyncBN" else _revert_syncbn(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_revert_syncbn(v) for v in obj]
    return obj


def load_config(path: Path = BISENET_CONFIG) -> Config:
    return Config.fromfile(str(path))


def build_model(cfg: Config | None = None, init: bool = True):
    """mmseg's EncoderDecoder from the config (SyncBN -> BN), init_weights() run as the Runner does."""
    cfg = cfg or load_config()
    model_cfg = _revert_syncbn(cfg.model.to_dict())
    model = MODELS.build(ConfigDict(model_cfg))
    if init:
        model.init_weights()
    return model


def versions() -> dict[str, str]:
    import mmcv
    import mmengine

    return {
        "mmseg": mmseg.__version__,
        "mmcv": mmcv.__version__,
        "mmengine": mmengine.__version__,
        "torch": torch.__version__,
    }


if __name__ == "__main__":  # `make parity-env`'s smoke test: mmseg imports and builds BiSeNetV2
    model = build_model(init=False)
    print(
        "[parity-env] ok:",
        ", ".join(f"{k} {v}" for k, v in versions().items()),
        f"| BiSeNetV2 {sum(p.numel() for p in model.parameters()):,} parameters",
    )
