"""Whether the server can listen where it was told to, checked before anything heavy is loaded, so a
taken port or a host this machine does not have is one message within a second or two, not a uvicorn
error after the model has loaded."""

from __future__ import annotations

import socket

from bisenet_pl.errors import ConfigError


def check_free(host: str, port: int) -> None:
    """Raise `ConfigError` unless a server socket can bind `host:port` now."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise ConfigError(
            f"cannot serve on {host}:{port}: {e.strerror or e}; choose another port= or host="
        ) from None


__all__ = ["check_free"]
