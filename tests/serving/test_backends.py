"""The server runs whatever backend the Predictor runs: `build_app` on an onnxruntime Predictor (the
checkpoint exported on the fly) answers as the torch Predictor does, in process (the app's lifespan
entered by hand, requests through httpx's ASGI transport)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from _shared import randomize_bn

from bisenet_pl.checkpoints import save_checkpoint
from bisenet_pl.data.synthetic import render_scene
from bisenet_pl.evaluation.agreement import label_agreement
from bisenet_pl.inference.predictor import Predictor
from bisenet_pl.models import Segmentor
from bisenet_pl.serving.app import ServeOptions, build_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_an_onnxruntime_server_answers_as_the_torch_predictor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Segmentor(aux_heads=False)
    randomize_bn(model)
    ckpt = save_checkpoint(model.eval(), tmp_path / "tiny.ckpt", {"test_scale": [128, 64]})
    images = [render_scene(seed, height=64, width=128)["image"] for seed in (1, 2)]
    reference = Predictor(ckpt, device="cpu")

    app = build_app(
        Predictor(ckpt, device="cpu", backend="onnxruntime"), ServeOptions(model_name="tiny.ckpt")
    )

    async def serve() -> tuple[dict, list[httpx.Response]]:
        async with app.router.lifespan_context(app):  # starts and stops the micro-batcher
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
                health = (await client.get("/health")).json()
                bodies = [cv2.imencode(".png", rgb[..., ::-1])[1].tobytes() for rgb in images]
                return health, [await client.post("/predict", content=b) for b in bodies]

    health, answers = asyncio.run(serve())
    assert (health["backend"], health["model"]) == ("onnxruntime", "tiny.ckpt")
    assert [r.status_code for r in answers] == [200, 200]
    masks = [
        torch.from_numpy(cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED))
        for r in answers
    ]
    expected = [torch.from_numpy(reference(rgb)) for rgb in images]
    # the exported graph's own float rounding: the agreement every exported path is held to
    assert label_agreement(expected, masks) >= 0.999
