"""The parity suite's plumbing: run mmseg's side in its own venv, collect every measured figure.

- `reference(command, *args)` runs `tests/parity/reference/mmseg_side.py COMMAND OUT` with the parity
  venv's Python (default `<repo>/.parity-venv`, or `$BISENET_PARITY_VENV`) and returns OUT. Results of
  one command with the same arguments are shared by the whole session. A missing venv is a failure
  that says to run `make parity-env`, never a skip.
- `record(check, quantity, measured, tolerance, ok)` stores one row; at the end of the session the rows
  are merged into `outputs/parity/parity.json` (ignored by git: a test run leaves the tree as it found
  it) and printed in the terminal summary. `make parity-report` runs the suite and then, on purpose,
  copies those figures to experiments/parity.json and regenerates the tables in docs/.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import report  # noqa: E402  (tests/parity/report.py)

SIDE = HERE / "reference" / "mmseg_side.py"
#: Where a run of the suite writes its figures; `make parity-report` publishes them (report.py).
RESULTS = Path(os.environ.get("BISENET_PARITY_OUT", REPO / "outputs" / "parity" / "parity.json"))


def parity_python() -> Path:
    venv = Path(os.environ.get("BISENET_PARITY_VENV", REPO / ".parity-venv"))
    return venv / "bin" / "python"


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: compares against mmsegmentation run in its own venv")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.parity)


@pytest.fixture(scope="session", autouse=True)
def deliberate_break():
    """`BISENET_PARITY_BREAK=<name>` applies one of tests/parity/breaks.py for the whole session."""
    name = os.environ.get("BISENET_PARITY_BREAK")
    if not name:
        yield None
        return
    import breaks
    import ours

    mp = pytest.MonkeyPatch()
    breaks.BREAKS[name](ours, mp)
    yield name
    mp.undo()


_ROWS: list[dict] = []
_TIMES: dict[str, float] = {}


@pytest.fixture(scope="session")
def reference_python() -> Path:
    py = parity_python()
    if not py.exists():
        pytest.fail(
            f"the mmsegmentation reference venv is missing ({py.parent.parent}): run `make parity-env` "
            "(or set BISENET_PARITY_VENV to an existing one)",
            pytrace=False,
        )
    probe = subprocess.run(
        [str(py), "-c", "import mmseg, mmengine, mmcv; print(mmseg.__version__)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0:
        pytest.fail(
            f"the reference venv {py.parent.parent} cannot import mmseg: run `make parity-env`\n"
            + probe.stderr[-2000:],
            pytrace=False,
        )
    return py


@pytest.fixture(scope="session")
def reference(reference_python, tmp_path_factory):
    """`reference(command, *args) -> Path`: run one mmseg-side command (once per session per args)."""
    cache: dict[tuple, Path] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})

    def run(command: str, *args: str, timeout: float = 600) -> Path:
        key = (command, *args)
        if key not in cache:
            tag = hashlib.sha1(repr(key).encode()).hexdigest()[:8]
            out = tmp_path_factory.mktemp(f"mmseg_{command}_{tag}")
            start = time.perf_counter()
            proc = subprocess.run(
                [str(reference_python), str(SIDE), command, str(out), *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=str(out),
            )
            _TIMES[f"{command} {' '.join(args)}".strip()] = time.perf_counter() - start
            if proc.returncode != 0:
                pytest.fail(
                    f"mmseg side `{command}` failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}",
                    pytrace=False,
                )
            cache[key] = out
        return cache[key]

    return run


def load(path: Path):
    """Every file from the reference side is read without running code."""
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def record():
    """`record(check, quantity, measured, tolerance, ok)`: one row of the parity table."""

    def add(check: str, quantity: str, measured, tolerance: str, ok: bool) -> bool:
        row = {
            "check": check,
            "quantity": quantity,
            "measured": report.clean(measured),
            "tolerance": tolerance,
            "ok": bool(ok),
        }
        _ROWS[:] = [r for r in _ROWS if (r["check"], r["quantity"]) != (check, quantity)]
        _ROWS.append(row)
        print(
            f"[parity] {check}: {quantity} = {report.fmt(row['measured'])} (tolerance {tolerance})"
            f" {'ok' if ok else 'FAIL'}"
        )
        return bool(ok)

    return add


def pytest_sessionfinish(session, exitstatus):
    # BISENET_PARITY_NO_WRITE=1: a deliberate-break run, whose figures must not replace the real ones
    if not _ROWS or os.environ.get("BISENET_PARITY_NO_WRITE") or os.environ.get("BISENET_PARITY_BREAK"):
        return
    base = RESULTS if RESULTS.exists() else report.PUBLISHED  # a partial run merges into the last figures
    data = json.loads(base.read_text()) if base.exists() else {}
    checks = data.get("checks", {})
    for check in {row["check"] for row in _ROWS}:  # a check that ran replaces its old rows entirely
        checks[check] = {}
    for row in _ROWS:
        checks.setdefault(row["check"], {})[row["quantity"]] = {
            k: row[k] for k in ("measured", "tolerance", "ok")
        }
    data["checks"] = {k: dict(sorted(v.items())) for k, v in sorted(checks.items())}
    data["reference"] = {
        "mmsegmentation": "1.2.2",
        "mmengine": "0.10.7",
        "mmcv-lite": "2.1.0",
        "config": "bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    terminalreporter.section(f"parity figures ({RESULTS}; `make parity-report` publishes them)")
    for row in _ROWS:
        terminalreporter.write_line(
            f"{'ok  ' if row['ok'] else 'FAIL'} {row['check']:<12} {row['quantity']:<48} "
            f"{report.fmt(row['measured']):>14}   tolerance {row['tolerance']}"
        )
    for what, seconds in _TIMES.items():
        terminalreporter.write_line(f"mmseg side {what}: {seconds:.1f} s")
