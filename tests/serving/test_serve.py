"""`python -m bisenet_pl.serve ckpt=...` as a user runs it: a real server process on a free local port,
real HTTP requests, and the upload page in a real headless Chromium.

The server's answers must be the Python API's answers: the masks of 8 concurrent requests equal
`Predictor` masks of the same files, and they ran batched (a batch > 1). Every bad request gets its
4xx and a sentence that names the problem; Ctrl-C stops the server with status 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from _shared import cli_env, randomize_bn

from bisenet_pl.checkpoints import save_checkpoint
from bisenet_pl.data.preprocess import read_rgb
from bisenet_pl.inference.predictor import Predictor
from bisenet_pl.models import Segmentor

#: Small limits, so that each refusal is cheap to provoke.
LIMITS = {"max_bytes": 200_000, "max_pixels": 200_000, "max_side": 1000}


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen
    log: Path
    ckpt: Path
    images: list[Path]


def _wait_healthy(proc: subprocess.Popen, log: Path, timeout: float = 60) -> str:
    """The server's URL, once it answers /health: it listens on port 0 (the system picks a free port, no
    race with another test) and names the bound port in its "serving ... on http://..." line."""
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        if url is None:
            found = re.search(r"serving \S+ on (http://127\.0\.0\.1:(\d+)) ", log.read_text())
            url = found.group(1) if found and int(found.group(2)) != 0 else None
        if url is not None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"serve did not answer /health within {timeout} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def _serving(tiny_data: Path, root: Path) -> Iterator[Server]:
    """A tiny model (BN statistics randomised, logits of order 1: no near-ties) served with small limits
    and a batch window wide enough that requests sent together meet in one batch; stopped with Ctrl-C
    (SIGINT) afterwards unless the test already stopped it."""
    torch.manual_seed(0)
    model = Segmentor(aux_heads=False)
    randomize_bn(model)
    ckpt = save_checkpoint(model.eval(), root / "tiny.ckpt", {"test_scale": [128, 64]})
    images = sorted((tiny_data / "leftImg8bit" / "train").rglob("*.png"))[:8]
    log = root / "serve.log"
    args = [
        f"ckpt={ckpt}",
        "port=0",
        "device=cpu",
        "batch.max_size=8",
        "batch.timeout_ms=300",
        f"demo_image={images[0]}",
        f"hydra.run.dir={root / 'run'}",
        *(f"limits.{k}={v}" for k, v in LIMITS.items()),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bisenet_pl.serve", *args],
            cwd=root,
            env=cli_env(OMP_NUM_THREADS="2"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _wait_healthy(proc, log)
        yield Server(url, int(url.rsplit(":", 1)[1]), proc, log, ckpt, images)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def server(tiny_data: Path, tmp_path_factory) -> Iterator[Server]:
    """The server most tests share; none of them stops it."""
    with _serving(tiny_data, tmp_path_factory.mktemp("serve")) as running:
        yield running


@pytest.fixture(scope="module")
def predictor(server: Server) -> Predictor:
    return Predictor(server.ckpt, device="cpu")


def _png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _assert_same_mask(served: np.ndarray, predictor: Predictor, path: Path) -> None:
    """The served mask is the Predictor's mask of the file; a batched convolution may round the last bit
    differently, so a pixel may differ only where the top two classes are within 1e-4 (a near-tie)."""
    expected = predictor(path)
    assert served.shape == expected.shape and served.dtype == np.uint8
    differ = served != expected
    if differ.any():
        top2 = predictor.scores(path)[0].topk(2, dim=0).values
        margin = (top2[0] - top2[1]).numpy()
        assert (margin[differ] < 1e-4).all(), (
            f"{path.name}: {int(differ.sum())} pixels differ beyond near-ties"
        )


def test_health_names_the_model_its_classes_backend_and_device(server: Server, predictor: Predictor) -> None:
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok"
    assert health["model"] == "tiny.ckpt"
    assert health["classes"] == predictor.class_names and health["num_classes"] == 19
    assert (health["backend"], health["device"]) == ("torch", "cpu")
    assert health["limits"] == LIMITS


def test_concurrent_requests_are_batched_and_equal_the_predictor(
    server: Server, predictor: Predictor
) -> None:
    barrier = threading.Barrier(len(server.images), timeout=30)
    answers: dict[int, httpx.Response] = {}

    def send(i: int, path: Path) -> None:
        data = path.read_bytes()
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            if i % 2:  # half as multipart uploads, half as raw bodies
                answers[i] = client.post(f"{server.url}/predict", files={"file": (path.name, data)})
            else:
                answers[i] = client.post(f"{server.url}/predict", content=data)

    threads = [threading.Thread(target=send, args=(i, p)) for i, p in enumerate(server.images)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(answers) == list(range(8))
    for i, path in enumerate(server.images):
        r = answers[i]
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        _assert_same_mask(_png(r.content), predictor, path)
    sizes = [int(answers[i].headers["x-batch-size"]) for i in range(8)]
    assert max(sizes) > 1, f"no request was batched: batch sizes {sizes}"
    batching = httpx.get(f"{server.url}/health").json()["batching"]
    assert batching["largest"] == max(sizes) and batching["requests"] >= 8


def test_json_gives_class_shares_and_the_colour_and_overlay_pictures_match(
    server: Server, predictor: Predictor
) -> None:
    path = server.images[1]
    rgb = read_rgb(path)
    mask = predictor(rgb)
    data = path.read_bytes()

    body = httpx.post(f"{server.url}/predict", params={"format": "json"}, content=data, timeout=60).json()
    assert (body["width"], body["height"]) == (128, 64)
    counts = np.bincount(mask.ravel(), minlength=19)
    assert body["classes"] == {n: c / mask.size for n, c in zip(predictor.class_names, counts, strict=True)}
    assert body["latency_ms"] > 0 and body["batch_size"] >= 1

    colour = httpx.post(f"{server.url}/predict", params={"mask": "color"}, content=data, timeout=60)
    assert np.array_equal(_png(colour.content)[..., ::-1], predictor.colorize(mask))

    over = httpx.post(f"{server.url}/overlay", params={"opacity": 0.3}, content=data, timeout=60)
    assert over.headers["content-type"] == "image/png"
    assert np.array_equal(_png(over.content)[..., ::-1], predictor.overlay(rgb, mask, 0.3))
    jpeg = httpx.post(f"{server.url}/overlay", params={"format": "jpeg"}, content=data, timeout=60)
    assert jpeg.headers["content-type"] == "image/jpeg" and _png(jpeg.content).shape == (64, 128, 3)


def _encoded(height: int, width: int) -> bytes:
    return cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))[1].tobytes()


#: (what a user sent, the request, the status, words the message must contain)
BAD_REQUESTS = [
    ("text, not an image", {"content": b"hello, world"}, 415, "not an image"),
    ("a truncated PNG", {"content": "TRUNCATED"}, 400, "corrupt image"),
    ("an empty body", {"content": b""}, 400, "empty request body"),
    ("a multipart form without 'file'", {"files": {"photo": ("a.png", b"x")}}, 400, "without a 'file' field"),
    (
        "a multipart body without a boundary",
        {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
        400,
        "boundary",
    ),
    ("an unknown format", {"params": {"format": "gif"}, "content": "IMAGE"}, 422, "format"),
    ("an unknown mask kind", {"params": {"mask": "labelid"}, "content": "IMAGE"}, 422, "mask"),
    ("a body over max_bytes", {"content": os.urandom(300_000)}, 413, "limits.max_bytes=200000"),
    ("a side over max_side", {"content": _encoded(1, 1200)}, 413, "limits.max_side=1000"),
    ("pixels over max_pixels", {"content": _encoded(500, 500)}, 413, "limits.max_pixels=200000"),
]


@pytest.mark.parametrize(
    ("what", "request_args", "status", "words"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_a_bad_request_gets_its_4xx_and_a_readable_message(
    server: Server, what: str, request_args: dict, status: int, words: str
) -> None:
    image = server.images[0].read_bytes()
    args = dict(request_args)
    if args.get("content") == "TRUNCATED":
        args["content"] = image[: len(image) // 2]
    elif args.get("content") == "IMAGE":
        args["content"] = image
    r = httpx.post(f"{server.url}/predict", timeout=60, **args)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and words in body["error"], body
    assert "Traceback" not in r.text


def test_overlay_refuses_an_opacity_outside_0_1(server: Server) -> None:
    r = httpx.post(f"{server.url}/overlay", params={"opacity": 2}, content=server.images[0].read_bytes())
    assert r.status_code == 422 and "opacity" in r.json()["error"]


def test_an_unknown_path_or_method_is_a_json_404_or_405(server: Server) -> None:
    missing = httpx.get(f"{server.url}/segment")
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found", "status": 404})
    wrong = httpx.get(f"{server.url}/predict")
    assert (wrong.status_code, wrong.json()) == (405, {"error": "Method Not Allowed", "status": 405})


def _chromium() -> str:
    path = os.environ.get("BISENET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            f"no Chromium at {path} for the web page test: `make browser` installs it "
            "(or set BISENET_CHROMIUM to a Chromium binary)"
        )
    return path


def test_the_page_uploads_a_photo_and_shows_the_servers_overlay(server: Server, tmp_path: Path) -> None:
    """`/?demo=1` hands the server's demo image to the page's upload function (the path a chosen file
    takes); after the JS ran, the page's <img id="overlay"> holds exactly the bytes /overlay returns."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=20000",
        "--dump-dom",
        f"{server.url}/?demo=1",
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    assert re.search(r'<body data-state="done"', dom), f"the page did not finish:\n{dom[-3000:]}"
    img = re.search(r'<img id="overlay"[^>]*>', dom)
    assert img, dom[-3000:]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', img.group(0)))
    assert attrs["src"].startswith("blob:") and (attrs["data-width"], attrs["data-height"]) == ("128", "64")
    overlay = httpx.post(f"{server.url}/overlay", content=server.images[0].read_bytes(), timeout=60).content
    assert attrs["data-sha256"] == hashlib.sha256(overlay).hexdigest()
    assert re.search(r'<small id="model">tiny\.ckpt - 19 classes, torch on cpu</small>', dom)


def test_bad_settings_and_a_taken_port_are_one_message(server: Server, run_cli) -> None:
    taken = run_cli("bisenet_pl.serve", f"ckpt={server.ckpt}", f"port={server.port}", timeout=120)
    assert taken.returncode == 2, taken.stderr[-2000:]
    assert f"cannot serve on 127.0.0.1:{server.port}" in taken.stderr and "Traceback" not in taken.stderr
    limits = run_cli("bisenet_pl.serve", f"ckpt={server.ckpt}", "limits.max_bytes=0", timeout=120)
    assert limits.returncode == 2 and "limits.max_bytes=0" in limits.stderr, limits.stderr[-2000:]


def test_ctrl_c_stops_the_server_cleanly(tiny_data: Path, tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) ends the process with status 0 and no traceback (a server of its own: the shared
    one stays up whatever the order of the tests)."""
    with _serving(tiny_data, tmp_path) as own:
        assert httpx.get(f"{own.url}/health", timeout=10).status_code == 200
        own.proc.send_signal(signal.SIGINT)
        assert own.proc.wait(timeout=20) == 0
    log = own.log.read_text()
    assert "Traceback" not in log and "Finished server process" in log
