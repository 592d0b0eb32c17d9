"""The run report on a short real training run (bf16 autocast and channels_last, as the demo trains, with
`logger=tensorboard`): the page in headless Chromium, its numbers against results.json, the confusion
matrix against the val labels, `evaluate` of the same checkpoint, TensorBoard's event file, and a run
folder that the report leaves as it found it."""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _shared import cli_env, tiny_train_args

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def bf16_run(tiny_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report_run")
    run_dir = root / "run"
    args = tiny_train_args(tiny_data, root, "trainer.max_steps=12", "trainer.val_check_interval=6",
                           f"hydra.run.dir={run_dir}")  # fmt: skip
    # The demo's precision and memory format (tiny_train_args asks for fp32): the final test must still
    # equal `evaluate`'s fp32 table.
    args = [a for a in args if not a.startswith(("trainer.precision=", "logger="))]
    args += ["trainer.precision=bf16-mixed", "module.channels_last=true", "logger=[tensorboard,wandb]"]
    proc = subprocess.run([sys.executable, "-m", "bisenet_pl.train", *args], cwd=root, env=cli_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail("no Chromium for the report page test: `make browser` installs it")
    return path


#: Appended to a *copy* of the page: after load, each <img>'s decoded size goes into the DOM.
PROBE = """<script>window.addEventListener('load', () => {
  const out = [...document.images].map(i => i.naturalWidth + 'x' + i.naturalHeight).join(' ');
  document.body.setAttribute('data-images', out); document.body.setAttribute('data-done', '1'); });
</script>"""


def _per_class(page: str) -> dict[str, list[str]]:
    table = re.search(r'<table id="per-class">(.*?)</table>', page, re.S)
    assert table, "no per-class table on the page"
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]:
        name = html.unescape(re.search(r"<td>(.*?)</td>", row).group(1))
        rows[name] = re.findall(r'data-value="([^"]*)">([^<]*)</td>', row)
    return rows


def test_the_page_opens_in_chromium_and_every_image_decodes(bf16_run: Path, tmp_path: Path) -> None:
    page = (bf16_run / "report.html").read_text()
    assert "http://" not in page and "https://" not in page, "the page must need no network"
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", PROBE + "</body>"))
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=10000", "--dump-dom", copy.as_uri()]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    assert 'data-done="1"' in dom, dom[-2000:]
    sizes = re.search(r'data-images="([^"]*)"', dom).group(1).split()
    # losses, lr, speed, data wait or its note, val, per-class bars, confusion matrix, val image grid
    assert len(sizes) >= 7, sizes
    assert all(int(s.split("x")[0]) > 0 and int(s.split("x")[1]) > 0 for s in sizes), sizes
    assert len(sizes) == page.count("<img ")
    for name in ("losses", "lr", "speed", "val", "per_class_iou", "confusion_matrix", "val_samples"):
        assert (bf16_run / "report" / f"{name}.png").stat().st_size > 1000, name


def test_the_per_class_numbers_on_the_page_are_results_json(bf16_run: Path) -> None:
    results = json.loads((bf16_run / "results.json").read_text())["results"]
    shown = _per_class((bf16_run / "report.html").read_text())
    assert list(shown) == list(results["per_class"])
    for name, values in results["per_class"].items():
        for (full, text), key in zip(shown[name], ("IoU", "Acc", "Precision", "Dice"), strict=True):
            expected = values[key]
            if expected is None:
                assert (full, text) == ("", "n/a"), (name, key)
            else:
                assert float(full) == expected and text == f"{expected:.2f}", (name, key, full, expected)


def test_the_confusion_matrix_rows_sum_to_the_val_label_counts(bf16_run: Path, tiny_data: Path) -> None:
    from bisenet_pl.data.cityscapes import find_samples, load_label
    from bisenet_pl.reporting.confusion import read_confusion_csv

    names, counts = read_confusion_csv(bf16_run / "confusion_matrix.csv")
    expected = np.zeros(len(names), dtype=np.int64)
    for sample in find_samples(tiny_data, "val"):
        label = load_label(sample)
        expected += np.bincount(label[label != 255].ravel(), minlength=len(names))[: len(names)]
    assert expected.sum() > 0
    np.testing.assert_array_equal(counts.sum(axis=1), expected)
    results = json.loads((bf16_run / "results.json").read_text())["results"]
    np.testing.assert_array_equal(counts, np.asarray(results["confusion_matrix"]))


def test_evaluate_of_the_last_checkpoint_gives_the_runs_table(
    bf16_run: Path, tiny_data: Path, run_cli
) -> None:
    """One number per checkpoint: the run trained under bf16 autocast in channels_last, and its final test
    (results.json) equals evaluate's fp32 table of last.ckpt to the last digit."""
    out = bf16_run.parent / "evaluate"
    proc = run_cli("bisenet_pl.evaluate", f"ckpt={bf16_run / 'checkpoints' / 'last.ckpt'}",
                   f"data.root={tiny_data}", f"data.synthetic_root={tiny_data}", "num_workers=0",
                   f"hydra.run.dir={out}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((bf16_run / "results.json").read_text())["results"]
    ev = json.loads((out / "results.json").read_text())["results"]
    assert ev["per_class"] == run["per_class"] and ev["mIoU"] == run["mIoU"] and ev["aAcc"] == run["aAcc"]
    assert ev["confusion_matrix"] == run["confusion_matrix"]
    assert (out / "confusion_matrix.csv").read_text() == (bf16_run / "confusion_matrix.csv").read_text()
    assert _per_class((out / "report.html").read_text()) == _per_class((bf16_run / "report.html").read_text())


def test_the_page_names_command_checkpoint_config_and_machine(bf16_run: Path) -> None:
    page = (bf16_run / "report.html").read_text()
    command = html.unescape(re.search(r'<pre id="command">(.*?)</pre>', page, re.S).group(1))
    assert (
        command.startswith("python -m bisenet_pl.train experiment=demo")
        and "'logger=[tensorboard,wandb]'" in command  # quoted as a shell needs it
    )
    assert html.unescape(re.search(r'<code id="checkpoint">(.*?)</code>', page).group(1)) == str(
        bf16_run / "checkpoints" / "last.ckpt"
    )
    diff = re.search(r'<table id="config">(.*?)</table>', page, re.S).group(1)
    assert "trainer.max_steps" in diff and "<td>200</td><td>12</td>" in diff  # the demo's 200 -> 12
    assert '<table id="machine">' in page and "torch" in page
    # This run logged no data-wait metric (until one is added): the page says so instead of a blank.
    assert "data_wait" in page


def test_tensorboard_has_the_scalars_and_the_val_panels(bf16_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(bf16_run / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "val/mIoU", "test/mIoU"} <= set(tags["scalars"]), tags["scalars"]
    assert [e.step for e in events.Scalars("val/mIoU")] == [5, 11]
    panels = [t for t in tags["images"] if t.startswith("val/predictions/")]
    assert len(panels) == 3 and "test/confusion_matrix" in tags["images"], tags["images"]
    assert events.Images(panels[0])[0].width == 3 * 128  # image | ground truth | prediction


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "report.html" and "report" not in p.relative_to(folder).parts[:1]
    }


def test_the_report_command_changes_nothing_else(bf16_run: Path, run_cli) -> None:
    before = _tree(bf16_run)
    proc = run_cli("bisenet_pl.report", str(bf16_run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"report: {bf16_run / 'report.html'}")
    assert _tree(bf16_run) == before


def test_the_wandb_run_gets_the_confusion_matrix(bf16_run: Path) -> None:
    from _wandb_records import history

    run_id = (bf16_run / "wandb_run_id.txt").read_text().strip()
    run_file = next((bf16_run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    row = next(r for r in history(run_file) if "test/confusion_counts.path" in r)
    assert row["test/confusion_matrix._type"] == "image-file" and row["test/confusion_matrix.width"] > 0
    table = json.loads((run_file.parent / "files" / row["test/confusion_counts.path"]).read_text())
    results = json.loads((bf16_run / "results.json").read_text())["results"]
    assert table["columns"] == ["label", *results["per_class"]]
    assert [r[1:] for r in table["data"]] == results["confusion_matrix"]
