"""Checkpoints: our self-describing format, Lightning's `.ckpt`, and mmsegmentation's `.pth`.

`io` writes atomically and loads without running code; `formats` reads each format into
`CheckpointContents`; `mmseg` holds mmseg's naming; `config` infers the model from tensor shapes;
`meta` completes class names, palette and normalisation. No Hydra, no Lightning.
"""

from bisenet_pl.checkpoints.config import infer_model_config
from bisenet_pl.checkpoints.formats import CheckpointContents, load_model, read_checkpoint, save_checkpoint
from bisenet_pl.checkpoints.io import atomic_torch_save, safe_load
from bisenet_pl.checkpoints.meta import complete_meta, default_meta
from bisenet_pl.errors import CheckpointError

__all__ = [
    "CheckpointContents",
    "CheckpointError",
    "atomic_torch_save",
    "complete_meta",
    "default_meta",
    "infer_model_config",
    "load_model",
    "read_checkpoint",
    "safe_load",
    "save_checkpoint",
]
