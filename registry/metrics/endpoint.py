"""`GET /metrics`: the route (on the main listener, or alone on `metrics.listen`) and the listener
of its own, which `registry serve` runs in a thread of its parent process beside uvicorn's workers.

The listener binds its socket before the server starts, so a taken port is one line at start; it
speaks through the same HTTP protocol, TLS and logging as the API listener (uvicorn options from
registry.__main__), and under several workers it answers from every worker's files like any of
them would.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from typing import Any

from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from ..handlers.base import run
from ..settings import SettingsError
from .access import MetricsAccess
from .exposition import CONTENT_TYPE, render

log = logging.getLogger("cargobay.registry")
PATH = "/metrics"


def metrics_route(access: MetricsAccess, collectors: Sequence[Collector] = ()) -> Route:
    async def metrics(request: Request) -> Response:
        await access.check(request)
        body = await run(render, collectors)  # the quota collector may read storage
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    return Route(PATH, metrics, methods=["GET"])


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` (`[::1]:9090`, `0.0.0.0:9090`) → (host, port); SettingsError otherwise."""
    host, sep, port = value.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"metrics.listen: {value!r} is not host:port (e.g. 0.0.0.0:9090)")
    return host, int(port)


class OwnListener:
    """The metrics listener, served by uvicorn in a thread of its own (its own event loop)."""

    def __init__(self, app: ASGIApp, listen: str, options: dict[str, Any]) -> None:
        import uvicorn

        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, reuse_port=False)
        self.address = listen
        config = {**options, "host": host, "port": port, "workers": None, "lifespan": "off"}
        self.server = uvicorn.Server(uvicorn.Config(app, **config))
        self.thread = threading.Thread(target=self._serve, name="metrics-listener", daemon=True)

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except BaseException:  # the API goes on without it; say so once
            log.exception("the metrics listener on %s stopped", self.address)

    def start(self) -> None:
        self.thread.start()
        log.info("metrics on http%s://%s%s", "s" if self.server.config.is_ssl else "", self.address, PATH)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()
