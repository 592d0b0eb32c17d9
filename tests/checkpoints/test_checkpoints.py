"""Checkpoints: mmseg -> ours (API and CLI), round trips, Lightning files, and every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bisenet_pl.checkpoints import (
    CheckpointContents,
    infer_model_config,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from bisenet_pl.convert import main as convert_main
from bisenet_pl.data.cityscapes import CLASSES, MEAN, PALETTE, STD
from bisenet_pl.errors import CheckpointError
from bisenet_pl.models import Segmentor

# mmseg's BiSeNetV2 state dict: every key, shape and dtype (385 tensors), read from mmseg 1.2.2.
KEYS_JSON = Path(__file__).resolve().parents[1] / "data" / "mmseg_state_dict_keys.json"
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NotWeights:
    """A custom class: pickling an instance stores a reference to code, which weights_only refuses."""

    def __init__(self) -> None:
        self.x = 1


def _random_tensor(shape: list[int], dtype: torch.dtype, key: str, g: torch.Generator) -> torch.Tensor:
    if not dtype.is_floating_point:
        return torch.randint(0, 1000, shape, generator=g, dtype=dtype)
    t = torch.randn(shape, generator=g, dtype=dtype)
    if key.endswith("running_var"):
        t = t.abs() + 0.5
    elif key.endswith(".weight") and ".bn." in key:
        t = t.abs() * 0.5 + 0.5
    elif key.endswith(".weight"):
        t = t * 0.05
    return t


@pytest.fixture(scope="module")
def mmseg_sd() -> dict[str, torch.Tensor]:
    """An mmseg-named BiSeNetV2 state dict built from the JSON key list, random values."""
    g = torch.Generator().manual_seed(0)
    return {
        e["key"]: _random_tensor(e["shape"], getattr(torch, e["dtype"].split(".")[1]), e["key"], g)
        for e in json.loads(KEYS_JSON.read_text())
    }


def ours(key: str) -> str:
    return key.replace("auxiliary_head.", "aux_heads.", 1)


@pytest.fixture(scope="module")
def reference_model(mmseg_sd: dict[str, torch.Tensor]) -> Segmentor:
    """A Segmentor given the same weights directly (no checkpoint code involved)."""
    m = Segmentor()
    m.load_state_dict({ours(k): v for k, v in mmseg_sd.items()}, strict=True)
    return m.eval()


def assert_same_weights(model: Segmentor, mmseg_sd: dict[str, torch.Tensor], aux: bool = True) -> None:
    sd = model.state_dict()
    expected = {ours(k): v for k, v in mmseg_sd.items() if aux or not k.startswith("auxiliary_head.")}
    assert set(sd) == set(expected)
    for k, v in expected.items():
        assert torch.equal(sd[k], v), k


def assert_same_outputs(a: Segmentor, b: Segmentor) -> None:
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def run_convert(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bisenet_pl.convert", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


# ------------------------------------------------------------------------------- mmseg checkpoints


@pytest.mark.parametrize("layout", ["wrapped", "module_prefix", "bare", "bare_module_prefix"])
def test_mmseg_layouts_load(tmp_path: Path, mmseg_sd: dict, reference_model: Segmentor, layout: str) -> None:
    sd = {f"module.{k}": v for k, v in mmseg_sd.items()} if "module" in layout else dict(mmseg_sd)
    if layout.startswith("bare"):
        obj: dict = sd
    else:
        obj = {
            "meta": {"CLASSES": tuple(f"c{i}" for i in range(19)), "iter": 160000, "config": "x" * 50},
            "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
        }
    path = tmp_path / "mmseg.pth"
    torch.save(obj, path)

    contents = read_checkpoint(path)
    assert contents.source_format == "mmseg"
    assert contents.model_config["num_classes"] == 19 and contents.model_config["aux_heads"] is True
    if "module" in layout:
        assert contents.renamed["'module.' removed"] == 385
    if not layout.startswith("bare"):
        assert contents.skipped == ["optimizer"]
        assert contents.meta["classes"] == [f"c{i}" for i in range(19)]  # taken from mmseg's meta
        assert contents.meta["mmseg_meta"] == {"iter": 160000}
    else:
        assert contents.meta["classes"] == list(CLASSES)

    model = load_model(path)
    assert not model.training
    assert_same_weights(model, mmseg_sd)
    assert_same_outputs(model, reference_model)


def test_convert_cli(tmp_path: Path, mmseg_sd: dict, reference_model: Segmentor) -> None:
    src = tmp_path / "mmseg.pth"
    torch.save({"meta": {"iter": 160000}, "state_dict": mmseg_sd, "optimizer": {"state": {}}}, src)
    dst = tmp_path / "out" / "bisenetv2.ckpt"
    res = run_convert(str(src), str(dst))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "mmseg" in out and "385 tensors" in out
    assert "'auxiliary_head.' -> 'aux_heads.' (56 keys)" in out
    for part, n in [
        ("backbone.detail", 48),
        ("backbone.semantic", 239),
        ("backbone.bga", 34),
        ("decode_head", 8),
    ]:
        assert any(line.split() == [part, str(n)] for line in out.splitlines()), part
    assert "skipped: optimizer" in out

    raw = torch.load(dst, map_location="cpu", weights_only=True)  # plain containers only
    assert raw["format"] == "bisenet_pl" and raw["format_version"] == 1
    assert raw["meta"]["converted_from"] == str(src)
    model = load_model(dst)
    assert_same_weights(model, mmseg_sd)
    assert_same_outputs(model, reference_model)


def test_convert_main_drop_aux(tmp_path: Path, mmseg_sd: dict, reference_model: Segmentor, capsys) -> None:
    src = tmp_path / "mmseg.pth"
    torch.save({f"module.{k}": v for k, v in mmseg_sd.items()}, src)
    dst = tmp_path / "deploy.ckpt"
    assert convert_main([str(src), str(dst), "--drop-aux"]) == 0
    out = capsys.readouterr().out
    assert "'module.' removed (385 keys)" in out
    assert "56 aux-head tensors" in out and "3,358,883 parameters" in out
    model = load_model(dst)
    assert model.config["aux_heads"] is False and len(model.aux_heads) == 0
    assert len(model.state_dict()) == 385 - 56
    assert_same_weights(model, mmseg_sd, aux=False)
    assert_same_outputs(model, reference_model)


def test_convert_help_and_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        convert_main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--drop-aux" in out and "mmseg" in out and "weights_only" in out
    assert convert_main([str(tmp_path / "missing.pth"), str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and str(tmp_path / "missing.pth") in err
    # the real process: exit status 2, one message, no traceback, nothing written
    bad = tmp_path / "noise.pth"
    bad.write_bytes(os.urandom(2000))
    res = run_convert(str(bad), str(tmp_path / "x.ckpt"))
    assert res.returncode == 2
    assert str(bad) in res.stderr and "Traceback" not in res.stderr + res.stdout
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.ckpt").exists()


def test_inference_only_mmseg_state_dict(tmp_path: Path, mmseg_sd: dict, reference_model: Segmentor) -> None:
    path = tmp_path / "no_aux.pth"
    torch.save({k: v for k, v in mmseg_sd.items() if not k.startswith("auxiliary_head.")}, path)
    model = load_model(path)
    assert model.config["aux_heads"] is False and len(model.aux_heads) == 0
    assert_same_outputs(model, reference_model)


def test_infer_config_non_default_shapes(tmp_path: Path) -> None:
    src = Segmentor(
        num_classes=5,
        detail_channels=(8, 16, 32),
        semantic_channels=(8, 16, 24, 32),
        semantic_expansion_ratio=4,
        bga_channels=32,
        decode_channels=40,
        aux_channels=(4, 8, 12, 16),
    )
    sd = {k.replace("aux_heads.", "auxiliary_head."): v for k, v in src.state_dict().items()}
    expected = {**src.config}
    assert infer_model_config(src.state_dict()) == expected
    path = tmp_path / "small.pth"
    torch.save({"state_dict": sd}, path)
    model = load_model(path)
    assert model.config == expected
    assert model.meta["classes"] == [f"class_{i}" for i in range(5)] and len(model.meta["palette"]) == 5


# ------------------------------------------------------------------------------------ our format


def test_round_trip_save_load(tmp_path: Path, reference_model: Segmentor) -> None:
    path = save_checkpoint(reference_model, tmp_path / "sub" / "model.ckpt", meta={"iteration": 160000})
    assert path == tmp_path / "sub" / "model.ckpt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.ckpt"]  # no temp file left
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"format", "format_version", "model_config", "state_dict", "meta"}
    assert raw["model_config"] == reference_model.config
    assert raw["meta"]["classes"] == list(CLASSES)
    assert raw["meta"]["palette"] == [list(c) for c in PALETTE]
    assert raw["meta"]["mean"] == list(MEAN) and raw["meta"]["std"] == list(STD)
    assert raw["meta"]["iteration"] == 160000
    contents = read_checkpoint(path)
    assert isinstance(contents, CheckpointContents) and contents.source_format == "bisenet_pl"
    model = load_model(path)
    assert model.meta["iteration"] == 160000
    for k, v in reference_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert_same_outputs(model, reference_model)


def test_round_trip_non_default_config(tmp_path: Path) -> None:
    m = Segmentor(num_classes=3, aux_heads=False, head_dropout=0.2, align_corners=True, decode_channels=16)
    model = load_model(save_checkpoint(m, tmp_path / "m.ckpt", meta={"classes": ["a", "b", "c"]}))
    assert model.config == m.config and model.meta["classes"] == ["a", "b", "c"]
    assert model.decode_head.dropout.p == 0.2 and model.align_corners is True


def test_save_is_atomic_when_interrupted(tmp_path: Path, reference_model: Segmentor, monkeypatch) -> None:
    path = tmp_path / "model.ckpt"
    save_checkpoint(reference_model, path)
    good = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr("bisenet_pl.checkpoints.io.torch.save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(reference_model, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(reference_model, tmp_path / "new.ckpt")
    assert not (tmp_path / "new.ckpt").exists()


def test_save_refuses_fused_and_non_plain_meta(tmp_path: Path) -> None:
    m = Segmentor(aux_heads=False)
    with pytest.raises(TypeError, match="meta"):
        save_checkpoint(m, tmp_path / "a.ckpt", meta={"obj": NotWeights()})
    with pytest.raises(ValueError, match="fused"):
        save_checkpoint(m.fuse(), tmp_path / "b.ckpt")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- lightning


def test_lightning_checkpoint_loads(tmp_path: Path, reference_model: Segmentor) -> None:
    sd = {f"model.{k}": v for k, v in reference_model.state_dict().items()}
    sd["loss_fn.class_weight"] = torch.ones(19)
    ckpt = {
        "epoch": 3,
        "global_step": 1000,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": sd,
        "optimizer_states": [{"state": {}, "param_groups": []}],
        "lr_schedulers": [],
        "bisenet_pl": {
            "model_config": reference_model.config,
            "meta": {"classes": list(CLASSES), "run": "x"},
        },
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    contents = read_checkpoint(path)
    assert contents.source_format == "lightning"
    assert "state_dict entries loss_fn.* (1 tensors)" in contents.skipped
    assert "optimizer_states" in contents.skipped
    assert contents.meta["run"] == "x" and contents.meta["mean"] == list(MEAN)
    model = load_model(path)
    assert_same_outputs(model, reference_model)


def test_lightning_checkpoint_without_config_infers_it(tmp_path: Path) -> None:
    m = Segmentor(num_classes=7, aux_heads=False)
    path = tmp_path / "bare_lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in m.state_dict().items()}, "global_step": 5}, path)
    model = load_model(path)
    assert model.config["num_classes"] == 7 and model.config["aux_heads"] is False
    assert_same_outputs(model, m)


# ------------------------------------------------------------------------------------ bad inputs


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "\n" not in msg.strip()
    return msg


def test_missing_path_and_directory(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "nope.pth")
    assert "directory" in _error(tmp_path)


def test_not_a_checkpoint_files(tmp_path: Path, reference_model: Segmentor) -> None:
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    assert "PNG" in _error(png)
    noise = tmp_path / "noise.pth"
    noise.write_bytes(os.urandom(4096))
    assert "not a PyTorch checkpoint" in _error(noise)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert "empty" in _error(empty)
    good = save_checkpoint(Segmentor(aux_heads=False), tmp_path / "good.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated or corrupt" in _error(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint at all\n")
    _error(text)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    for i, obj in enumerate([NotWeights(), {"state_dict": {}, "extra": NotWeights()}]):
        path = tmp_path / f"code{i}.pth"
        torch.save(obj, path)
        msg = _error(path)
        assert "not a plain checkpoint" in msg and "will not be unpickled" in msg and "safety" in msg
        assert "NotWeights" in msg


def test_wrong_structures(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    assert "not a checkpoint dict" in _error(path)
    path = tmp_path / "cfg.pth"
    torch.save({"lr": 0.1, "epochs": 3}, path)
    assert "no 'state_dict'" in _error(path)
    path = tmp_path / "future.ckpt"
    torch.save({"format": "bisenet_pl", "format_version": 99, "state_dict": {}}, path)
    assert "version 99" in _error(path)


def test_checkpoint_of_another_model(tmp_path: Path) -> None:
    sd = {
        f"layer{i}.{j}.conv{c}.weight": torch.zeros(4, 4, 3, 3)
        for i in range(4)
        for j in range(2)
        for c in (1, 2)
    }
    sd["fc.weight"] = torch.zeros(1000, 512)
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": sd}, path)
    msg = _error(path)
    assert "329 missing key(s): backbone.detail.detail_branch.0.0.conv.weight" in msg
    assert "17 unexpected key(s): layer0.0.conv1.weight" in msg and "..." in msg


def test_shape_mismatch_and_partial_keys(tmp_path: Path, mmseg_sd: dict) -> None:
    sd = dict(mmseg_sd)
    sd["backbone.bga.conv.conv.weight"] = torch.zeros(128, 128, 1, 1)
    del sd["backbone.semantic.stage4_CEBlock.gap.1.running_mean"]
    sd["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": sd}, path)
    msg = _error(path)
    assert (
        "1 shape mismatch(es): backbone.bga.conv.conv.weight (file (128, 128, 1, 1), model (128, 128, 3, 3))"
        in msg
    )
    assert "1 missing key(s): backbone.semantic.stage4_CEBlock.gap.1.running_mean" in msg
    assert "1 unexpected key(s): backbone.extra.weight" in msg
