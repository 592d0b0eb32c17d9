"""The lock: the suite runs on the exact versions it records, and `make install` installs from it.

`make test` exports BISENET_LOCK (the lock it installed from); without it, this Python's lock in
requirements/ is the one checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _lock_path() -> Path:
    default = REPO / "requirements" / f"lock-py{sys.version_info[0]}.{sys.version_info[1]}.txt"
    return Path(os.environ.get("BISENET_LOCK") or default)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path}: {line!r} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_suite_runs_on_the_versions_the_lock_records() -> None:
    lock = _lock_path()
    assert lock.is_file(), (
        f"{lock} is missing: the suite is tested on a locked set; `make lock` writes one for this Python"
    )
    pins = _pins(lock)
    assert {"opencv-python-headless", "numpy", "lightning", "albumentations"} <= pins.keys()
    assert not any(name == "torch" or name.startswith("nvidia-") for name in pins), "torch: the user's build"
    wrong = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            wrong[name] = f"locked {version}, installed {installed}"
    assert not wrong, f"the environment differs from {lock.name}: {wrong}"


def test_make_install_installs_from_the_lock_and_torch_first() -> None:
    dry = subprocess.run(
        ["make", "-n", "-B", "install", "VENV=/nonexistent-venv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lock = f"requirements/lock-py{sys.version_info[0]}.{sys.version_info[1]}.txt"
    assert (REPO / lock).is_file(), f"no lock for this Python ({lock}): `make lock` writes one"
    editable = next(line for line in dry.splitlines() if "install" in line and "-e " in line)
    assert f"-c {lock}" in editable
    torch_line = next(line for line in dry.splitlines() if '"torch==' in line)
    assert f"-c {lock}" in torch_line and "numpy" in torch_line  # numpy with torch: no import warning


def test_pyproject_caps_the_majors_that_are_not_tested() -> None:
    text = (REPO / "pyproject.toml").read_text()
    for requirement in ('"opencv-python-headless>=4.9,<6"', '"numpy>=1.24,<3"', '"torch>=2.4,<3"'):
        assert requirement in text
