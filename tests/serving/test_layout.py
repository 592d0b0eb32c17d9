"""The serving package stays light: importing it (limits, batching, segment) pulls in no web framework,
and nothing of it pulls in Hydra or Lightning; only `bisenet_pl.serving.app` (the serve command's
routes) imports FastAPI."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("hydra", "lightning", "pytorch_lightning", "fastapi", "starlette", "uvicorn", "litserve")


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("bisenet_pl.serving", ()),
        ("bisenet_pl.serving.segment", ()),
        ("bisenet_pl.serving.app", ("fastapi", "starlette")),
    ],
)
def test_importing_serving_pulls_in_only_what_it_needs(module: str, allowed: tuple[str, ...]) -> None:
    code = (
        f"import sys, {module}; "
        f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    pulled = {m for m in out.strip().split(",") if m}
    assert pulled <= set(allowed), f"importing {module} pulled in {sorted(pulled - set(allowed))}"
