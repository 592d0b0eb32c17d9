"""What a new user runs into, each one readable line and a non-zero exit: a key left out, a value of the
wrong type, a GPU recipe on a CPU machine, a corrupt image met by a DataLoader worker, an output folder
that cannot be written, a sliding window larger than the image."""

from __future__ import annotations

import shutil

import pytest
import torch
from _shared import tiny_train_args


def _one_line_error(proc, *expected: str) -> None:
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    assert "Traceback" not in proc.stderr and "Original Traceback" not in proc.stderr, proc.stderr[-3000:]
    for text in expected:
        assert text in proc.stderr, proc.stderr[-3000:]


def test_a_mandatory_key_left_out(run_cli, trained_run):
    _one_line_error(run_cli("bisenet_pl.evaluate"), "`ckpt` is required: add ckpt=<value>")
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    _one_line_error(run_cli("bisenet_pl.predict", f"ckpt={ckpt}"), "`input` is required")


def test_a_value_of_the_wrong_type_names_its_key(run_cli, tiny_data, tmp_path):
    proc = run_cli("bisenet_pl.train", *tiny_train_args(tiny_data, tmp_path, "data.batch_size=abc"))
    _one_line_error(proc, "data.batch_size must be an integer, got 'abc'")
    proc = run_cli("bisenet_pl.train", *tiny_train_args(tiny_data, tmp_path, "data.crop_size=64"))
    _one_line_error(proc, "data.crop_size must have two values")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_a_gpu_row_on_a_cpu_machine_stops_unless_the_cpu_is_asked_for(run_cli, tiny_data, tmp_path):
    args = [a for a in tiny_train_args(tiny_data, tmp_path) if not a.startswith("experiment=")]
    proc = run_cli("bisenet_pl.train", "experiment=4x4", *args)
    _one_line_error(proc, "4x4 is a 4-GPU recipe and this machine has no CUDA GPU", "trainer.accelerator=cpu")


def test_a_corrupt_image_in_a_worker_is_one_message(run_cli, tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    images = sorted((data / "leftImg8bit" / "train").rglob("*.png"))
    images[3].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    args = tiny_train_args(data, tmp_path, "data.num_workers=1", "trainer.max_steps=20")
    proc = run_cli("bisenet_pl.train", *args)
    _one_line_error(proc, f"Cannot decode image {images[3]}")


def test_an_output_folder_that_cannot_be_written(run_cli, trained_run, tiny_data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # root ignores permissions; a file in the path stops everyone
    proc = run_cli("bisenet_pl.predict", f"ckpt={trained_run / 'checkpoints' / 'last.ckpt'}",
                   f"input={tiny_data / 'leftImg8bit' / 'val'}", f"output={blocker / 'out'}")  # fmt: skip
    _one_line_error(proc, "cannot write", "Choose another output= folder")


def test_slide_with_a_window_larger_than_the_image_says_it_equals_whole(run_cli, trained_run, tiny_data):
    proc = run_cli("bisenet_pl.evaluate", f"ckpt={trained_run / 'checkpoints' / 'last.ckpt'}",
                   f"data.root={tiny_data}", "mode=slide", "limit=1", "num_workers=0")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "so this equals mode=whole" in proc.stdout + proc.stderr
