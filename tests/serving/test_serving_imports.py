"""The serving package stays light: importing it (limits, batching, segment) pulls in no web framework,
and nothing of it pulls in Hydra or Lightning; only `bisenet_pl.serving.app` (the serve command's
routes) imports FastAPI, and uvicorn loads only when the server runs."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("hydra", "lightning", "pytorch_lightning", "fastapi", "starlette", "uvicorn", "litserve")


def test_importing_serving_pulls_in_only_what_it_needs() -> None:
    code = f"""
import json, sys
heavy = lambda: sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))
import bisenet_pl.serving, bisenet_pl.serving.segment
light = heavy()
import bisenet_pl.serving.app
print(json.dumps([light, heavy()]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    light, app = json.loads(out)
    assert light == [], f"importing bisenet_pl.serving pulled in {light}"
    assert app == ["fastapi", "starlette"], f"importing bisenet_pl.serving.app pulled in {app}"
