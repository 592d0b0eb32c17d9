"""The package as a newcomer meets it: libraries that import no Hydra or Lightning, a wheel that finds its
configs outside the checkout, and one preprocessing for every door an image comes in by."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def _library_modules() -> list[str]:
    """Every module of the package that is library code (not a command, not `cli/`, not `training/` or
    the Lightning data modules): walked, not listed by hand, so a new module is covered by itself."""
    commands = {p.stem for p in (REPO / "bisenet_pl").glob("*.py")} - {
        "__init__",
        "_lazy",
        "errors",
        "hardware",
    }
    found = []
    for path in sorted((REPO / "bisenet_pl").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] in ("__init__", "__main__"):
            parts = parts[:-1] if parts[-1] == "__init__" else parts
        name = ".".join(parts)
        sub = parts[1] if len(parts) > 1 else ""
        datamodule = sub == "data" and name.endswith("datamodule")
        if sub in commands or sub in ("cli", "training") or datamodule or "__main__" in parts:
            continue
        found.append(name)
    return found


LIBRARIES = _library_modules()


def test_library_code_imports_neither_hydra_nor_lightning() -> None:
    """One fresh interpreter imports the library modules one by one; the first that pulls in Hydra or
    Lightning is named."""
    code = (
        "import importlib, json, sys\n"
        f"for module in {LIBRARIES!r}:\n"
        "    importlib.import_module(module)\n"
        "    heavy = ('hydra', 'lightning', 'pytorch_lightning')\n"
        "    bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "    if bad:\n"
        "        print(json.dumps([module, bad[:5]]))\n"
        "        break\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"importing (module, what it pulled in): {out.strip()}"


def test_no_library_subpackage_imports_the_commands_or_hydra() -> None:
    """Library code never reaches for `bisenet_pl.cli`, a command module, or Hydra (training may use
    Lightning; nothing below `bisenet_pl/<subpackage>/` may use Hydra)."""
    commands = {
        "train",
        "evaluate",
        "predict",
        "benchmark",
        "export",
        "convert",
        "demo",
        "serve",
        "report",
        "browse",
    }
    top_level = {p.stem for p in (REPO / "bisenet_pl").glob("*.py")}
    assert top_level - commands == {"__init__", "_lazy", "errors", "hardware"}  # a new command joins the list
    offenders = []
    for path in (REPO / "bisenet_pl").rglob("*.py"):
        rel = path.relative_to(REPO / "bisenet_pl")
        if len(rel.parts) == 1 or rel.parts[0] == "cli":
            continue  # the commands and their Hydra glue
        text = path.read_text()
        for line in text.splitlines():
            s = line.strip()
            if s.startswith(("import hydra", "from hydra", "from omegaconf", "import omegaconf")):
                offenders.append(f"{rel}: {s}")
            if s.startswith(("from bisenet_pl.cli", "import bisenet_pl.cli")):
                offenders.append(f"{rel}: {s}")
            if any(s.startswith(f"from bisenet_pl.{c} import") for c in commands):
                offenders.append(f"{rel}: {s}")
    assert offenders == []


@pytest.mark.slow
def test_wheel_installs_outside_the_checkout_and_composes_every_experiment(tmp_path: Path) -> None:
    # built from a copy of what the wheel is made of: setuptools writes build/ and *.egg-info next to the
    # sources it builds, which must not land in the checkout
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("bisenet_pl", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)

    def build_outputs() -> dict[Path, int]:
        found = [REPO / "build", *REPO.glob("*.egg-info"), *REPO.glob("bisenet_pl*.egg-info")]
        return {p: p.stat().st_mtime_ns for p in found if p.exists()}

    before = build_outputs()
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
         str(src)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert build_outputs() == before  # nothing written (or rewritten) in the checkout
    (wheel,) = dist.glob("bisenet_pl-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies come from the project's environment (a path entry: its editable install of
    # bisenet_pl is a .pth hook, which a path entry does not run); bisenet_pl itself only from the wheel.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    probe = f"""
import json, bisenet_pl
from hydra import compose, initialize_config_module
out = {{"file": bisenet_pl.__file__, "experiments": {{}}}}
with initialize_config_module("bisenet_pl.conf", version_base="1.3"):
    for name in {EXPERIMENTS!r}:
        cfg = compose("train", overrides=[f"experiment={{name}}"], return_hydra_config=True)
        out["experiments"][name] = [cfg.trainer.max_steps, cfg.data.batch_size]
print(json.dumps(out))
"""
    run = subprocess.run([str(py), "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).is_relative_to(Path(site)), out["file"]  # not the checkout
    assert sorted(out["experiments"]) == EXPERIMENTS and len(EXPERIMENTS) >= 5
    assert out["experiments"]["4x4"] == [160000, 4] and out["experiments"]["4x8"] == [160000, 8]


def test_one_preprocessing_for_the_dataset_the_api_and_the_self_check(tmp_path: Path) -> None:
    """The dataset's test pipeline, the Python API's preprocessing and the fast path's self-check frames
    are the same function: bit-identical tensors for the same image."""
    import cv2

    from bisenet_pl.data.cityscapes import CityscapesDataset
    from bisenet_pl.data.preprocess import preprocess, read_rgb
    from bisenet_pl.data.synthetic import make_synthetic_cityscapes
    from bisenet_pl.data.transforms import build_test_transform

    root = make_synthetic_cityscapes(tmp_path / "cs", 0, 1, 0, 100, 180, 3)
    dataset = CityscapesDataset(root, "val", transform=build_test_transform((640, 320)))
    sample = dataset[0]
    rgb = read_rgb(sample["image_path"])
    api = preprocess(rgb, (640, 320))
    assert torch.equal(api[0], sample["image"])
    assert tuple(api.shape[-2:]) == (320, 576)  # 100x180 into the (640, 320) box keeps the aspect ratio
    bgr = cv2.imread(str(sample["image_path"]))
    assert np.array_equal(bgr[..., ::-1], rgb)
