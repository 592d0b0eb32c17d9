"""The server's routes on FastAPI: `POST /predict`, `POST /overlay`, `GET /health`, `GET /` (the page),
`GET /demo-image`.

Only the serve command and the tests import this module (it imports FastAPI). Every answer to bad
input is a JSON `{"error": "<one sentence>", "status": <code>}` with a 4xx status: a `RequestRefused`
from `limits`, FastAPI's query validation (422, the parameter named), Starlette's own refusals
(404, 405, a malformed multipart body). Anything else is a bug: logged with its traceback on the
server, answered with a 500 that carries no traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from bisenet_pl.inference.predictor import Predictor
from bisenet_pl.serving.address import check_free
from bisenet_pl.serving.batching import MicroBatcher
from bisenet_pl.serving.limits import Limits, RequestRefused, decode_image
from bisenet_pl.serving.page import PAGE
from bisenet_pl.serving.segment import Segmented, class_shares, encode, image_key, segment_batch

log = logging.getLogger("bisenet_pl.serve")

#: The multipart field that carries the image.
FILE_FIELD = "file"


@dataclass
class ServeOptions:
    """What the server adds around the predictor: limits, batching, the overlay's default opacity, the
    name /health reports, and the image `/demo-image` returns (None: a synthetic street scene)."""

    limits: Limits = field(default_factory=Limits)
    max_batch_size: int = 8
    batch_timeout_ms: float = 10.0
    opacity: float = 0.5
    model_name: str = "model"
    demo_image: str | Path | None = None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one sentence: 'format: Input should be 'png' or 'json' (got 'gif')'."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body"))
        got = f" (got {err['input']!r})" if "input" in err and err["input"] is not None else ""
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}{got}")
    return "; ".join(parts)


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The body, refused with 413 as soon as it (declared or as read) passes `limits.max_bytes`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        limits.check_length(int(declared))
    chunks: list[bytes] = []
    length = 0
    async for chunk in request.stream():
        length += len(chunk)
        limits.check_length(length)
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_bytes(request: Request, body: bytes) -> bytes:
    """The image's bytes: the multipart `file` field, or the whole body for any other content type."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    upload = form.get(FILE_FIELD)
    if upload is None:
        sent = ", ".join(repr(k) for k in form.keys()) or "none"
        raise RequestRefused(
            400,
            f"multipart upload without a {FILE_FIELD!r} field (fields sent: {sent}); "
            f"send the image as {FILE_FIELD}=@photo.jpg",
        )
    if not isinstance(upload, UploadFile):
        raise RequestRefused(400, f"the {FILE_FIELD!r} field is text, not a file upload")
    return await upload.read()


def build_app(predictor: Predictor, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI app serving `predictor`; its micro-batcher starts and stops with the app."""
    opts = options or ServeOptions()
    limits = opts.limits
    batcher: MicroBatcher[np.ndarray, Segmented] = MicroBatcher(
        lambda images: segment_batch(predictor, images), opts.max_batch_size, opts.batch_timeout_ms, image_key
    )
    # A configured demo image is read now (a bad path fails the start, not a request); the synthetic
    # scene is rendered at the first /demo-image request.
    demo_png: list[bytes] = [] if opts.demo_image is None else [_demo_png(opts.demo_image)]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        log.info(
            "serving %s (%s on %s, batches of up to %d within %g ms)",
            *(opts.model_name, predictor.path_name, predictor.device),
            *(opts.max_batch_size, opts.batch_timeout_ms),
        )
        yield
        await batcher.stop()

    app = FastAPI(title="bisenet_pl", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestRefused)
    async def refused(request: Request, exc: RequestRefused) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal server error ({type(exc).__name__}); the server log has the details")

    async def segmented(request: Request) -> tuple[np.ndarray, Segmented, float]:
        start = time.perf_counter()
        body = await _read_body(request, limits)
        data = await _image_bytes(request, body)
        rgb = await asyncio.to_thread(decode_image, data, limits)
        return rgb, await batcher.submit(rgb), start

    def headers(result: Segmented, rgb: np.ndarray, start: float) -> dict[str, str]:
        return {
            "X-Batch-Size": str(result.batch_size),
            "X-Inference-Ms": f"{result.inference_ms:.1f}",
            "X-Latency-Ms": f"{(time.perf_counter() - start) * 1000:.1f}",
            "X-Image-Size": f"{rgb.shape[1]}x{rgb.shape[0]}",
        }

    @app.post("/predict", response_model=None)
    async def predict(
        request: Request,
        format: Literal["png", "json"] = Query("png", description="png: the mask; json: class shares"),
        mask: Literal["trainid", "color"] = Query("trainid", description="png only: train ids or palette"),
    ) -> Response:
        """The mask of the image: a train-id PNG (`mask=color`: the palette PNG), or JSON class shares."""
        rgb, result, start = await segmented(request)
        if format == "json":
            shares = class_shares(result.mask, predictor.class_names)
            h = headers(result, rgb, start)
            return JSONResponse(
                {
                    "width": int(rgb.shape[1]),
                    "height": int(rgb.shape[0]),
                    "classes": shares,
                    "latency_ms": float(h["X-Latency-Ms"]),
                    "inference_ms": round(result.inference_ms, 1),
                    "batch_size": result.batch_size,
                },
                headers=h,
            )
        picture = predictor.colorize(result.mask) if mask == "color" else result.mask
        png = await asyncio.to_thread(encode, picture, "png")
        return Response(png, media_type="image/png", headers=headers(result, rgb, start))

    @app.post("/overlay")
    async def overlay(
        request: Request,
        format: Literal["png", "jpeg"] = Query("png"),
        opacity: float = Query(opts.opacity, ge=0.0, le=1.0, description="the mask's weight in the blend"),
    ) -> Response:
        """The palette mask blended over the image, as PNG or JPEG (what the page shows)."""
        rgb, result, start = await segmented(request)
        picture = predictor.overlay(rgb, result.mask, opacity)
        data = await asyncio.to_thread(encode, picture, format)
        return Response(data, media_type=f"image/{format}", headers=headers(result, rgb, start))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is served: model, classes, backend, device, batching counters, limits."""
        return {
            "status": "ok",
            "model": opts.model_name,
            "num_classes": len(predictor.class_names),
            "classes": predictor.class_names,
            "backend": getattr(predictor, "backend", "torch"),
            "device": str(predictor.device),
            "path": predictor.path_name,
            "mode": predictor.cfg.mode,
            "test_scale": list(predictor.test_scale) if predictor.test_scale else None,
            "batching": {
                "max_size": opts.max_batch_size,
                "timeout_ms": opts.batch_timeout_ms,
                **batcher.stats.as_dict(),
            },
            "limits": limits.as_dict(),
        }

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/demo-image")
    async def demo_image() -> Response:
        """A sample photo for `/?demo=1`: the configured `demo_image`, else a synthetic street scene."""
        if not demo_png:
            demo_png.append(await asyncio.to_thread(_demo_png, opts.demo_image))
        return Response(demo_png[0], media_type="image/png")

    return app


def _demo_png(path: str | Path | None) -> bytes:
    if path is None:
        from bisenet_pl.data.synthetic import render_scene

        return encode(render_scene(0, height=256, width=512)["image"], "png")
    from bisenet_pl.data.preprocess import read_rgb

    return encode(read_rgb(path), "png")


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, name: str = "the model") -> None:
    """Serve `app` with uvicorn until interrupted; uvicorn's log lines go through the command's logging.

    `port=0` listens on a free port the system picks; the line "serving NAME on http://HOST:PORT" names
    the port actually bound (the socket is bound here and handed to uvicorn, so nothing can take it).
    """
    import socket

    import uvicorn

    check_free(host, port)
    sock = socket.create_server((host, port))
    bound = int(sock.getsockname()[1])
    print(f"serving {name} on http://{host}:{bound} (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, host=host, port=bound, log_config=None, access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down; as `uvicorn.run`, end normally
        pass


__all__ = ["FILE_FIELD", "ServeOptions", "build_app", "run"]
