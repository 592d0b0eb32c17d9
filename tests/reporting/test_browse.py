"""`python -m bisenet_pl.browse`: each tile of the written grids is, pixel for pixel, the overlay of
the sample the DataModule itself returns for that seed (training: the first samples of its train loader;
test: the evenly spaced val images through the test pipeline), on the synthetic set and a folder set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIZES = ["data.crop_size=[64,64]", "data.scale=[128,64]", "data.test_scale=[128,64]", "data.num_workers=0"]
KW = {"crop_size": (64, 64), "scale": (128, 64), "test_scale": (128, 64), "num_workers": 0, "batch_size": 4}


def _browse(run_cli, out: Path, *args: str) -> None:
    proc = run_cli("bisenet_pl.browse", *SIZES, "--n", "6", "--columns", "3", "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"train: {out / 'browse_train.png'}" in proc.stdout


def _check_tiles(png: Path, samples, datamodule) -> None:
    from bisenet_pl.reporting.browse import overlay_tile, tile_origin

    grid = np.asarray(Image.open(png).convert("RGB"))
    tile = (max(s.image.shape[0] for s in samples), max(s.image.shape[1] for s in samples))
    for i, sample in enumerate(samples):
        x, y = tile_origin(i, tile, 3)
        h, w = sample.label.shape
        expected = overlay_tile(sample, datamodule.palette, int(datamodule.ignore_index))
        np.testing.assert_array_equal(grid[y : y + h, x : x + w], expected, err_msg=f"{png.name} tile {i}")


def _own_train_samples(datamodule, count: int):
    """What the DataModule's train loader yields first (num_workers=0), as browse's Sample objects."""
    from bisenet_pl.data.preprocess import denormalize
    from bisenet_pl.reporting.browse import Sample

    datamodule.setup("fit")
    samples = []
    for batch in datamodule.train_dataloader():
        for i in range(batch["image"].shape[0]):
            samples.append(Sample(batch["name"][i], denormalize(batch["image"][i]),
                                  batch["label"][i].numpy().astype(np.uint8)))  # fmt: skip
        if len(samples) >= count:
            return samples[:count]
    return samples


def test_browse_draws_the_datamodules_own_samples(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    from bisenet_pl.data.cityscapes_datamodule import CityscapesDataModule
    from bisenet_pl.reporting.browse import test_samples

    data = [f"data.root={tiny_data}", f"data.synthetic_root={tiny_data}"]
    _browse(run_cli, tmp_path / "s3", *data, "--seed", "3")
    dm = CityscapesDataModule(tiny_data, seed=3, synthetic_root=tiny_data, **KW)
    own = _own_train_samples(dm, 6)
    assert len(own) == 6 and any((s.label != 255).any() for s in own)
    _check_tiles(tmp_path / "s3" / "browse_train.png", own, dm)
    _check_tiles(tmp_path / "s3" / "browse_test.png", test_samples(dm, 6), dm)
    # The seed decides the grid: another seed draws other samples.
    other = _own_train_samples(CityscapesDataModule(tiny_data, seed=4, synthetic_root=tiny_data, **KW), 6)
    assert any(not np.array_equal(a.label, b.label) for a, b in zip(own, other, strict=True))


def test_browse_on_a_folder_dataset_uses_its_classes_and_palette(tmp_path: Path, run_cli) -> None:
    from bisenet_pl.data.folder_datamodule import FolderDataModule
    from bisenet_pl.data.synthetic.layouts import make_layout_dataset

    root = make_layout_dataset("five", tmp_path / "five", n_train=6, n_val=2, height=64, width=128)
    _browse(run_cli, tmp_path / "out", "data=folder", f"data.root={root}", "--seed", "1")
    dm = FolderDataModule(root, seed=1, **KW)
    assert dm.num_classes == 5
    _check_tiles(tmp_path / "out" / "browse_train.png", _own_train_samples(dm, 6), dm)
    from bisenet_pl.reporting.browse import test_samples

    val = test_samples(dm, 6)
    assert len(val) == 2
    _check_tiles(tmp_path / "out" / "browse_test.png", val, dm)


def test_browse_refuses_a_bad_argument_in_one_line(run_cli) -> None:
    proc = run_cli("bisenet_pl.browse", "data=folder", "n=3")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: unknown argument 'n=3': give data=<preset> or data.<key>=<value>"
    ), proc.stderr
