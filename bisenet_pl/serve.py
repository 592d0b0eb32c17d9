"""`python -m bisenet_pl.serve ckpt=PATH [backend=torch|onnxruntime|openvino] [host=...] [port=8000]`.

Loads the model once as a `Predictor` and serves it over HTTP until interrupted (Ctrl-C):
`POST /predict` (mask PNG or JSON class shares), `POST /overlay`, `GET /health`, and an upload page at
`/`. Requests arriving together are batched; oversized or broken uploads get a 4xx JSON message.
docs/serving.md has the endpoints, limits and measured speed.
"""

from __future__ import annotations

from pathlib import Path

from bisenet_pl.cli import CONFIG_PATH, build_predictor, keyword_options, quiet_environment, readable_errors

quiet_environment()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bisenet_pl.errors import ConfigError  # noqa: E402


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="serve")
@readable_errors
def main(cfg: DictConfig) -> None:
    from bisenet_pl.serving import Limits
    from bisenet_pl.serving.address import check_free

    # The cheap checks first: a bad limit or a taken port fails before torch and the model load.
    try:
        limits = Limits(**keyword_options(cfg.limits))
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if not str(cfg.port).isdigit() or not 0 <= int(cfg.port) < 65536:
        raise ConfigError(f"port={cfg.port!r}: must be a TCP port number (1-65535; 0: any free port)")
    check_free(cfg.host, int(cfg.port))

    try:
        from bisenet_pl.serving.app import ServeOptions, build_app, run
    except ImportError as e:
        raise ConfigError(f"serving needs the serve extras ({e}): pip install 'bisenet_pl[serve]'") from None

    predictor = build_predictor(cfg)
    options = ServeOptions(
        limits=limits,
        max_batch_size=int(cfg.batch.max_size),
        batch_timeout_ms=float(cfg.batch.timeout_ms),
        opacity=float(cfg.opacity),
        model_name=Path(str(cfg.ckpt)).name,
        demo_image=cfg.demo_image,
    )
    try:
        app = build_app(predictor, options)
    except ValueError as e:  # batch.max_size / batch.timeout_ms out of range
        raise ConfigError(str(e)) from None
    run(app, host=cfg.host, port=int(cfg.port), name=options.model_name)  # prints the address it serves


if __name__ == "__main__":
    main()
