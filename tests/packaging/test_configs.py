"""One source per number: a group's YAML starts from its target's Python signature and states only what
differs, while every argument stays a key a user can override (docs/training.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bisenet_pl.cli.signatures import arguments, schema
from bisenet_pl.data.cityscapes_datamodule import CityscapesDataModule
from bisenet_pl.training.module import SegmentationModule

CONF = Path(__file__).resolve().parents[2] / "conf"


def _compose(*overrides: str, name: str = "train"):
    with initialize_config_module("bisenet_pl.conf", version_base="1.3"):
        return compose(name, overrides=list(overrides))


def _group_yamls() -> list[Path]:
    """Every group YAML that starts from a signature schema."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
        if any(isinstance(d, str) and d.startswith("/signature/") for d in defaults):
            found.append(path)
    return found


def test_the_groups_named_by_the_issue_start_from_their_signature():
    names = {p.relative_to(CONF).as_posix() for p in _group_yamls()}
    assert {"data/cityscapes.yaml", "data/folder.yaml", "module/sgd_poly.yaml", "model/bisenetv2.yaml",
            "loss/ce.yaml", "inference/default.yaml"} <= names  # fmt: skip


@pytest.mark.parametrize("path", _group_yamls(), ids=lambda p: p.relative_to(CONF).as_posix())
def test_a_group_yaml_states_no_python_default(path):
    text = yaml.safe_load(path.read_text())
    name = next(d for d in text["defaults"] if isinstance(d, str) and d.startswith("/signature/"))
    node = OmegaConf.structured(_registered(name.split("/")[2].split("@")[0]))
    restated = [k for k, v in text.items() if k not in ("defaults",) and k in node and node[k] == v]
    assert restated == [], f"{path.name} restates its Python defaults: {restated}"


def _registered(name: str) -> type:
    import bisenet_pl.conf  # noqa: F401  (registers the schemas)
    from hydra.core.config_store import ConfigStore

    return ConfigStore.instance().repo["signature"][f"{name}.yaml"].node


def test_the_config_carries_the_python_defaults_and_every_key_overrides_without_plus(tmp_path):
    cfg = _compose("data.cat_max_ratio=0.5", "module.warmup_steps=7", f"data.root={tmp_path}")
    defaults = arguments(SegmentationModule)
    assert cfg.module.lr == defaults["lr"] == 0.05
    assert cfg.module.weight_decay == defaults["weight_decay"] == 5e-4
    assert cfg.module.warmup_steps == 7
    assert list(cfg.data.crop_size) == [1024, 1024]
    dm = instantiate(cfg.data)
    assert isinstance(dm, CityscapesDataModule)
    assert dm.cat_max_ratio == 0.5 and dm.batch_size == 4 and dm.scale == (2048, 1024)


def test_a_mistyped_key_is_refused_by_name():
    with pytest.raises(ConfigCompositionException) as err:
        _compose("data.batchsize=8")
    assert "batchsize" in str(err.value.__cause__ or err.value)


def test_a_specialisation_schema_holds_its_base_arguments():
    folder_schema = schema("bisenet_pl.data.folder_datamodule.FolderDataModule")
    folder = {f.name for f in dataclasses.fields(folder_schema)}
    assert {"batch_size", "num_workers", "photometric", "cat_max_ratio", "preset", "val_fraction"} <= folder
    assert "cache" not in folder  # the decoded-frame cache is Cityscapes' only


def test_folder_data_composes_with_its_preset_sizes(tmp_path):
    cfg = _compose("data=camvid", f"data.root={tmp_path}")
    assert cfg.data.preset == "camvid" and cfg.data.scale is None  # null: the preset's
    assert cfg.data.batch_size == 4
