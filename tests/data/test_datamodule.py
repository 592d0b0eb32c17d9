"""CityscapesDataModule: batches, tiny datasets, generation, distributed sampling, worker seeding."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from bisenet_pl.data import datamodule as dm_module
from bisenet_pl.data.cityscapes import CLASSES, CityscapesDataset
from bisenet_pl.data.cityscapes_datamodule import CityscapesDataModule
from bisenet_pl.data.datamodule import RepeatDataset, ShardedSampler, worker_init
from bisenet_pl.data.synthetic import make_synthetic_cityscapes
from bisenet_pl.data.transforms import build_train_transform
from bisenet_pl.errors import DatasetError

SMALL = {"crop_size": (64, 64), "scale": (256, 128), "test_scale": (256, 128), "num_workers": 0}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dm") / "cs"
    return make_synthetic_cityscapes(root, n_train=5, n_val=3, n_test=2, height=64, width=128, seed=0)


def test_train_and_val_batches(root):
    dm = CityscapesDataModule(root, batch_size=2, **SMALL)
    dm.setup("fit")
    assert len(dm.train_dataset) == 5 and len(dm.val_dataset) == 3
    assert dm.num_classes == 19 and dm.class_names == CLASSES
    train = dm.train_dataloader()
    assert len(train) == 2  # 5 images, batch 2, drop_last
    batch = next(iter(train))
    assert batch["image"].shape == (2, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 64, 64) and batch["label"].dtype == torch.int64
    val = dm.val_dataloader()
    assert val.batch_size == 1 and len(val) == 3
    batch = next(iter(val))
    assert batch["image"].shape == (1, 3, 128, 256)  # test_scale (256, 128) applied to the 128x64 image
    assert batch["label"].shape == (1, 64, 128)  # labels stay at full resolution
    assert not train.pin_memory  # auto: no CUDA here


def test_tiny_train_split_still_fills_a_batch(root):
    dm = CityscapesDataModule(root, batch_size=12, **SMALL)
    dm.setup("fit")
    assert isinstance(dm.train_dataset, RepeatDataset) and len(dm.train_dataset) == 15  # 5 x 3
    assert len(dm.train_dataloader()) == 1


def test_predict_loader_has_no_labels_and_test_defaults_to_val(root):
    dm = CityscapesDataModule(root, **SMALL)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert "label" not in batch and batch["name"][0].startswith("berlin_")
    dm.setup("test")
    assert dm.test_dataset.split == "val"


def test_prepare_data_generates_only_where_allowed(tmp_path):
    synthetic = {"n_train": 2, "n_val": 1, "n_test": 0, "height": 64, "width": 128}
    target = tmp_path / "synthetic_cityscapes"
    dm = CityscapesDataModule(target, synthetic=synthetic, synthetic_root=target, **SMALL)
    dm.prepare_data()
    assert len(list((target / "leftImg8bit" / "train").rglob("*.png"))) == 2
    # a mistyped path to real data is an error, not a silently generated fake dataset
    typo = tmp_path / "cityscpaes"
    dm = CityscapesDataModule(typo, synthetic=synthetic, synthetic_root=target, **SMALL)
    dm.prepare_data()
    assert not typo.exists()
    with pytest.raises(DatasetError, match="does not exist"):
        dm.setup("fit")
    dm = CityscapesDataModule(tmp_path / "off", generate_if_missing=False, **SMALL)
    dm.prepare_data()
    assert not (tmp_path / "off").exists()


def test_distributed_sampling(root, monkeypatch):
    monkeypatch.setattr(dm_module, "_dist_info", lambda: (1, 2))  # rank 1 of 2
    dm = CityscapesDataModule(root, batch_size=2, seed=5, **SMALL)
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, DistributedSampler)
    assert (sampler.rank, sampler.num_replicas, sampler.shuffle, sampler.drop_last, sampler.seed) == (
        1, 2, True, True, 5,
    )  # fmt: skip
    val = dm.val_dataloader()
    assert isinstance(val.sampler, ShardedSampler) and list(val.sampler) == [1]
    # every val image exactly once across ranks, never padded, for N % W != 0 too
    for n, world in ((3, 2), (500, 4), (7, 3), (2, 4)):
        shards = [list(ShardedSampler(n, r, world)) for r in range(world)]
        assert sorted(sum(shards, [])) == list(range(n))
        assert [len(ShardedSampler(n, r, world)) for r in range(world)] == [len(s) for s in shards]


def test_distributed_tiny_train_split_is_repeated_for_every_rank(root, monkeypatch):
    monkeypatch.setattr(dm_module, "_dist_info", lambda: (0, 4))
    dm = CityscapesDataModule(root, batch_size=2, **SMALL)
    dm.setup("fit")
    assert len(dm.train_dataset) >= 8  # one batch of 2 on each of 4 ranks
    assert len(dm.train_dataloader()) == 1


def crops_from_two_workers(dataset, init):
    loader = DataLoader(dataset, batch_size=1, num_workers=2, worker_init_fn=init, shuffle=False)
    batches = list(loader)  # item k comes from worker k % 2
    return batches[0]["image"], batches[1]["image"]


def test_workers_draw_different_augmentations(root):
    transform = build_train_transform((256, 128), crop_size=(48, 48), seed=0)
    one_image = CityscapesDataset(root, "train", transform=transform)
    one_image.samples = one_image.samples[:1]
    repeated = RepeatDataset(one_image, 2)  # the same image twice
    a, b = crops_from_two_workers(repeated, None)
    assert torch.equal(a, b)  # albumentations 2.0.8 alone: forked workers draw the same crop
    a, b = crops_from_two_workers(repeated, functools.partial(worker_init, rank=0))
    assert not torch.equal(a, b)


def test_worker_seed_mixes_in_the_rank(root):
    images = []
    for rank in (0, 1):
        ds = CityscapesDataset(root, "train", transform=build_train_transform((256, 128), crop_size=(48, 48)))
        ds.reseed([1234, rank])  # the same torch worker seed on two ranks
        images.append(ds[0]["image"])
    assert not torch.equal(*images)


def test_bad_sizes_are_config_errors(root):
    with pytest.raises(DatasetError, match="crop_size must have two values"):
        CityscapesDataModule(root, crop_size=(64,))
    with pytest.raises(DatasetError, match="batch_size >= 1"):
        CityscapesDataModule(root, batch_size=0)
