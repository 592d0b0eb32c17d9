"""Config schemas read from the Python signatures, so that every default is written once, in Python.

A config group's YAML (`conf/data/cityscapes.yaml`, `conf/module/sgd_poly.yaml`, ...) starts from the
schema of its `_target_` (`defaults: [/signature/<name>@_here_, _self_]`) and states only what has no
Python default or differs from it. The schema still lists every argument, so `data.cat_max_ratio=0.5`
overrides without a `+`, a mistyped key is refused by name, and `--cfg job` and the run folder's saved
config show every value the run used (docs/training.md, "Configs: each default written once").

Registered when Hydra first reads the configs (`bisenet_pl.conf` imports this module), not when a
command starts: reading a signature imports its module (Lightning, for the DataModules). Code that
composes `conf/` from its folder (`initialize_config_dir`) instead of the package imports
`bisenet_pl.conf` first.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from hydra.core.config_store import ConfigStore

#: The ConfigStore group the schemas live in: a YAML names one as `/signature/<name>@_here_`.
GROUP = "signature"

#: Schema name -> the object whose signature (or dataclass fields) it is; these carry it as `_target_`.
TARGETS: dict[str, str] = {
    "cityscapes_datamodule": "bisenet_pl.data.cityscapes_datamodule.CityscapesDataModule",
    "folder_datamodule": "bisenet_pl.data.folder_datamodule.FolderDataModule",
    "segmentor": "bisenet_pl.models.segmentor.Segmentor",
    "multi_head_loss": "bisenet_pl.training.losses.MultiHeadLoss",
    "segmentation_module": "bisenet_pl.training.module.SegmentationModule",
}
#: Arguments a schema leaves out because the command passes them: the module's network, loss and the
#: data's class table and test box; the loss's ignore index (the data's).
PASSED_BY_THE_COMMAND: dict[str, frozenset[str]] = {
    "segmentation_module": frozenset(
        {"model", "loss", "class_names", "palette", "ignore_index", "test_scale"}
    ),
    "multi_head_loss": frozenset({"ignore_index"}),
}
#: Keys a command reads beside the target's arguments: `model.init_from` (the train command loads the
#: file's tensors into the built network, checkpoints/init_from.py).
EXTRA_KEYS: dict[str, dict[str, Any]] = {"segmentor": {"init_from": None}}
#: The options object behind an argument given as a dict (`module.inference`): its fields, nested, less
#: the test box and normalisation, which come from the checkpoint or the data.
OPTIONS = {"inference": "bisenet_pl.inference.modes.InferenceConfig"}
OPTIONS_PASSED = frozenset({"box", "mean", "std"})
#: The inference options evaluate, predict and serve share (`conf/inference/`): `mode` is their own key.
INFERENCE_OPTIONS = "inference_options"


def _load(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def arguments(target: Callable[..., Any]) -> dict[str, Any]:
    """Every argument of `target` with its default (`MISSING` for a required one); a class's `**kwargs`
    are followed into its base classes' constructors, so a specialisation's schema holds its base's
    arguments too."""
    if dataclasses.is_dataclass(target):
        return {f.name: f.default for f in dataclasses.fields(target) if f.init}
    if not inspect.isclass(target):
        return {name: _default(p) for name, p in inspect.signature(target).parameters.items()}
    found: dict[str, Any] = {}
    for cls in inspect.getmro(target):
        if "__init__" not in vars(cls):
            continue
        forwards = False
        for name, parameter in inspect.signature(vars(cls)["__init__"]).parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif name != "self" and parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                found.setdefault(name, _default(parameter))
        if not forwards:
            break
    return found


def _default(parameter: inspect.Parameter) -> Any:
    empty = parameter.default is inspect.Parameter.empty
    return dataclasses.MISSING if empty else parameter.default


def _plain(value: Any) -> Any:
    """A config value for a Python default: tuples become lists, paths strings."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def schema(
    path: str,
    with_target: bool = True,
    leave_out: frozenset[str] = frozenset(),
    extra: dict[str, Any] | None = None,
) -> type:
    """A dataclass with `_target_` and one untyped field per argument: its default, or `???` (a value
    the config must give) for a required one."""
    target = _load(path)
    fields: list[tuple[str, Any, Any]] = []
    if with_target:
        fields.append(("_target_", str, dataclasses.field(default=path)))
    for name, default in {**arguments(target), **(extra or {})}.items():
        if name in leave_out:
            continue
        value = "???" if default is dataclasses.MISSING else _plain(default)
        if name in OPTIONS:
            nested = schema(OPTIONS[name], with_target=False, leave_out=OPTIONS_PASSED)
            fields.append((name, nested, dataclasses.field(default_factory=nested)))
        elif isinstance(value, list | dict):
            fresh = functools.partial(copy.deepcopy, value)  # a dataclass default may not be a list
            fields.append((name, Any, dataclasses.field(default_factory=fresh)))
        else:
            fields.append((name, Any, dataclasses.field(default=value)))
    return dataclasses.make_dataclass(f"{target.__name__}Schema", fields)


def register_signatures() -> None:
    """Store each schema of `TARGETS` in Hydra's ConfigStore (group `signature`)."""
    store = ConfigStore.instance()
    for name, path in TARGETS.items():
        leave_out = PASSED_BY_THE_COMMAND.get(name, frozenset())
        store.store(group=GROUP, name=name, node=schema(path, True, leave_out, EXTRA_KEYS.get(name)))
    options = schema(OPTIONS["inference"], with_target=False, leave_out=OPTIONS_PASSED | {"mode"})
    store.store(group=GROUP, name=INFERENCE_OPTIONS, node=options)
