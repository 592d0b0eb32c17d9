"""Files that are checkpoints in form but unusable in content are refused by name, with the reason.

Each case is what a careless or hostile user met: a diverged run's NaN weights (every pixel "road"), a
pickle that would run `os.system`, a hand-edited meta. One `CheckpointError`, never a library traceback.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from bisenet_pl.checkpoints import CheckpointError, load_model, read_checkpoint, save_checkpoint
from bisenet_pl.inference.predictor import Predictor
from bisenet_pl.models import Segmentor


def _tiny(**kw) -> Segmentor:
    torch.manual_seed(0)
    return Segmentor(
        detail_channels=(8, 8, 16),
        semantic_channels=(8, 16, 16, 16),
        bga_channels=16,
        decode_channels=16,
        aux_channels=(8, 8, 8, 8),
        **kw,
    )


@pytest.fixture
def saved(tmp_path):
    return save_checkpoint(_tiny(), tmp_path / "ok.ckpt")


def _edited(saved, tmp_path, edit) -> os.PathLike:
    obj = torch.load(saved, map_location="cpu", weights_only=True)
    edit(obj)
    out = tmp_path / "edited.ckpt"
    torch.save(obj, out)
    return out


def test_nan_weights_are_refused_naming_the_tensors(saved, tmp_path):
    def poison(obj):
        obj["state_dict"]["decode_head.conv_seg.weight"][0, 0] = float("nan")
        obj["state_dict"]["backbone.detail.detail_branch.0.0.conv.weight"].fill_(float("inf"))

    bad = _edited(saved, tmp_path, poison)
    with pytest.raises(CheckpointError) as err:
        load_model(bad)
    message = str(err.value)
    assert str(bad) in message and "2 of" in message and "NaN or infinite" in message
    assert "decode_head.conv_seg.weight" in message and "detail_branch.0.0.conv.weight" in message
    with pytest.raises(CheckpointError, match="NaN"):
        Predictor(bad)
    load_model(saved)  # the untouched file still loads


def test_a_pickle_that_would_run_code_is_refused_as_such(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))

    for name, write in (
        ("torch.pt", lambda p: torch.save({"state_dict": {"w": Payload()}}, p)),
        ("bare.pkl", lambda p: p.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=4))),
    ):
        path = tmp_path / name
        write(path)
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        message = str(err.value)
        assert "would have to call posix.system" in message and "run code" in message, message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda o: o["state_dict"].__setitem__("decode_head.conv_seg.bias", 3), "not tensors"),
        (lambda o: o["meta"].__setitem__("palette", [[0, 0]] * 19), "'palette'"),
        (lambda o: o["meta"].__setitem__("mean", "123.675"), "'mean'"),
        (lambda o: o["meta"].__setitem__("std", [0, 1, 1]), "'std' must be positive"),
        (lambda o: o["meta"].__setitem__("test_scale", [0, 0]), "'test_scale'"),
        (lambda o: o["meta"].__setitem__("classes", ["road"]), "'classes' must list 19"),
    ],
    ids=["int-in-state-dict", "palette-of-pairs", "string-mean", "zero-std", "zero-test-scale", "classes"],
)
def test_an_unusable_entry_is_one_message(saved, tmp_path, edit, expected):
    bad = _edited(saved, tmp_path, edit)
    with pytest.raises(CheckpointError, match=expected) as err:
        load_model(bad)
    assert str(bad) in str(err.value)


def test_random_bytes_are_never_mistaken_for_a_code_running_pickle(tmp_path):
    """The opcode scan that names a refused pickle's callable reads only whole protocol-2+ pickles: noise
    that happens to start like a GLOBAL opcode is "not a checkpoint", not "would run code"."""
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.pth"
    for i in range(300):
        data = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        path.write_bytes((b"c" if i % 2 else b"\x80\x04") + data)  # GLOBAL's and PROTO's first byte
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        assert "run code" not in str(err.value) and "not a PyTorch checkpoint" in str(err.value), str(
            err.value
        )
