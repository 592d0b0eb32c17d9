"""The deployment table (`benchmarks/deploy_table.py`, behind `make bench`): two paths of a tiny
model at toy sizes, the rows, the gates and the verdict as `experiments/deploy.md` shows them."""

from __future__ import annotations

import json

import pytest
import torch
from _shared import randomize_bn
from deploy_table import (
    REFERENCE,
    Plan,
    Unavailable,
    build_record,
    judge,
    markdown,
    torch_paths,
)

from bisenet_pl.models import Segmentor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_table_of_two_paths_at_toy_size(tmp_path) -> None:
    from bisenet_pl.data.cityscapes import CityscapesDataset
    from bisenet_pl.data.synthetic import make_synthetic_cityscapes
    from bisenet_pl.data.transforms import build_test_transform

    torch.manual_seed(0)
    model = Segmentor(
        aux_heads=False, detail_channels=(16, 16, 32), semantic_channels=(8, 16, 32, 32), bga_channels=32,
        decode_channels=64, semantic_expansion_ratio=2,
    )  # fmt: skip
    randomize_bn(model, classifier_std=0.5)
    model.eval()
    data = make_synthetic_cityscapes(tmp_path / "cs", n_train=0, n_val=2, n_test=0, height=64, width=128)
    dataset = CityscapesDataset(data, "val", transform=build_test_transform((128, 64)))
    paths = [*torch_paths(model)[:2], Unavailable("openvino int8 (fused)", "int8", "no model.int8.xml")]

    record = build_record(paths, Plan(sizes=((32, 64), (64, 128)), repeats=2), dataset)

    reference, fused, missing = record["rows"]
    assert reference["path"] == REFERENCE and fused["path"].startswith("fused + channels_last + fp32")
    for size in ("32x64", "64x128"):
        assert reference["sizes"][size]["ratio"] == 1.0 and reference["sizes"][size]["agreement"] == 1.0
        assert fused["sizes"][size]["ms"] > 0 and fused["sizes"][size]["agreement"] >= 0.9999
    assert 0 < reference["miou"] <= 100 and fused["miou"] == reference["miou"]  # same labels, same mIoU
    assert fused["passes_gate"] is True and "unavailable" in missing and "sizes" not in missing
    best = record["verdict"]
    assert best["path"] == fused["path"] and best["size"] == "64x128"
    assert best["meets_goal"] == (fused["sizes"]["64x128"]["ratio"] <= 0.25)

    text = markdown(record)
    lines = text.splitlines()
    assert lines[0].startswith("| path | 32x64 ms | 32x64 ratio | 32x64 agreement | 64x128 ms")
    assert len([line for line in lines if line.startswith("| ")]) == 2 + 3
    assert (
        "not run: no model.int8.xml" in text
        and f"Fastest path that keeps its gate at 64x128: {fused['path']}" in text
    )
    assert str(tmp_path) not in json.dumps(record)  # no machine paths in experiments/deploy.json
    assert record["machine"]["cpu_count"] >= 1


def test_each_kind_of_path_is_held_to_its_own_gate() -> None:
    def row(gate: str, agreement: float, miou: float | None = None) -> dict:
        return {"gate": gate, "sizes": {"8x8": {"agreement": agreement}}, "miou": miou}

    assert judge(row("fp32", 0.99995), 60.0)[0] and not judge(row("fp32", 0.9998), 60.0)[0]
    assert judge(row("bf16", 0.9991), 60.0)[0] and not judge(row("bf16", 0.998), 60.0)[0]
    assert judge(row("int8", 0.97, 59.6), 60.0)[0]  # 0.4 points below the reference
    passes, words = judge(row("int8", 0.99, 59.4), 60.0)  # 0.6 points below
    assert not passes and "mIoU drop <= 0.5 (here 0.60)" in words
