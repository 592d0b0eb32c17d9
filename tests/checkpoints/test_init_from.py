"""`model.init_from=<file>`: fine-tuning starts from every tensor that fits; the classifiers of another
class count start from our init; the report names both."""

from __future__ import annotations

import pytest
import torch

from bisenet_pl.checkpoints import CheckpointError, save_checkpoint
from bisenet_pl.checkpoints.init_from import start_from
from bisenet_pl.models import Segmentor

TINY = dict(
    detail_channels=(8, 8, 16),
    semantic_channels=(8, 16, 16, 16),
    bga_channels=16,
    decode_channels=16,
    aux_channels=(8, 8, 8, 8),
)
CLASSIFIERS = [
    f"{head}.conv_seg.{p}"
    for head in ("decode_head", "aux_heads.0", "aux_heads.1", "aux_heads.2", "aux_heads.3")
    for p in ("weight", "bias")
]


@pytest.fixture
def cityscapes_file(tmp_path):
    torch.manual_seed(1)
    model = Segmentor(num_classes=19, **TINY)
    for p in model.parameters():  # weights unlike any fresh init
        p.data.normal_()
    return model, save_checkpoint(model, tmp_path / "cityscapes.ckpt")


def test_a_two_class_model_from_a_cityscapes_checkpoint(cityscapes_file, caplog):
    source, path = cityscapes_file
    torch.manual_seed(7)
    fresh = Segmentor(num_classes=2, **TINY)
    torch.manual_seed(7)
    with caplog.at_level("INFO"):
        tuned = start_from(Segmentor(num_classes=2, **TINY), str(path))
    src, out, init = source.state_dict(), tuned.state_dict(), fresh.state_dict()
    for name, tensor in out.items():
        if name in CLASSIFIERS:
            assert torch.equal(tensor, init[name]), name  # our init, as a new 2-class model gets it
        else:
            assert torch.equal(tensor, src[name]), name  # the checkpoint's weights (BN stats included)
    text = caplog.text
    assert f"loaded {len(out) - 10} of {len(out)} tensors" in text
    assert "re-initialised (class count differs): 10: decode_head.conv_seg.weight" in text


def test_same_classes_loads_everything_and_an_inference_file_leaves_aux_heads_at_init(
    tmp_path, cityscapes_file
):
    source, path = cityscapes_file
    same = start_from(Segmentor(num_classes=19, **TINY), str(path))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.state_dict().items())
    inference_only = save_checkpoint(source.inference_copy(fuse=False), tmp_path / "deploy.ckpt")
    from bisenet_pl.checkpoints.init_from import load_matching

    report = load_matching(Segmentor(num_classes=19, **TINY), inference_only)
    assert report.not_in_file and all(n.startswith("aux_heads.") for n in report.not_in_file)
    assert not report.reinitialised and not report.shape_mismatch


def test_a_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(CheckpointError):
        start_from(Segmentor(num_classes=2, **TINY), str(path))
