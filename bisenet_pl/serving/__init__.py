"""The HTTP inference server behind `python -m bisenet_pl.serve`: a `Predictor` behind FastAPI + uvicorn.

The modules, one job each: `limits` (what a request may carry and how its image is decoded, refusals as
`RequestRefused` with their HTTP status), `batching` (the asyncio micro-batcher and its counters),
`segment` (a batch of images through the predictor's net, the answers' encodings), `page` (the upload
page), `address` (the port is free, checked before the model loads), `app` (the routes; the only module
that imports FastAPI, so importing this package stays light).
"""

from bisenet_pl.serving.limits import Limits, RequestRefused, decode_image

__all__ = ["Limits", "RequestRefused", "decode_image"]
