"""`GET /healthz`: can this replica serve? For load balancers, compose and Kubernetes probes.

It answers 200 `{"storage": "ok"}` when a cheap storage call (a `stat` of the layout's root: on S3 a
HEAD and at most a one-key listing) succeeds within PROBE_TIMEOUT, and 503 with the OCI error JSON
(UNAVAILABLE) when storage fails or does not answer in time. It needs no credentials and reveals
nothing about the content.

Probes are cheap for storage however often they come: one check runs at a time (concurrent
requests share it, so a hanging S3 cannot pile up threads), and a success is reused for
CACHE_SECONDS. A failure is never cached, so the endpoint turns healthy as soon as storage does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import Future

from starlette.requests import Request
from starlette.responses import Response

from ocispec.errors import ErrorCode
from storage import Storage, StorageError

from ..context import context
from ..errors import RegistryError
from .base import API_VERSION_HEADER

PROBE_TIMEOUT = 3.0  # seconds; probes usually allow 1-5 s, and S3 retries take longer than that
CACHE_SECONDS = 1.0


class HealthProbe:
    """One per app (kept in `app.state`): the shared in-flight check and the last success. The
    check runs in its own thread, not the request thread pool, so a hanging storage call holds
    nothing the handlers need."""

    def __init__(self, storage: Storage, timeout: float | None = None) -> None:
        self.storage = storage
        self.timeout = PROBE_TIMEOUT if timeout is None else timeout
        self._lock = threading.Lock()
        self._running: Future[None] | None = None
        self._ok_at = float("-inf")

    def _current(self) -> Future[None]:
        with self._lock:
            if self._running is None or self._running.done():
                future: Future[None] = Future()
                future.set_running_or_notify_cancel()  # a waiter giving up cannot cancel it

                def work() -> None:
                    try:
                        self.storage.check_health()
                    except BaseException as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(None)

                threading.Thread(target=work, name="cargobay-health", daemon=True).start()
                self._running = future
            return self._running

    async def check(self) -> None:
        """Return when storage is healthy; raise RegistryError 503 otherwise."""
        if time.monotonic() - self._ok_at < CACHE_SECONDS:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._current()), self.timeout)
        except TimeoutError:
            raise RegistryError(ErrorCode.UNAVAILABLE, f"storage did not answer within {self.timeout:g}s",
                                status=503) from None
        except StorageError as exc:
            raise RegistryError(ErrorCode.UNAVAILABLE, f"storage: {exc.message}", status=503) from None
        except Exception as exc:
            raise RegistryError(ErrorCode.UNAVAILABLE, f"storage: {type(exc).__name__}", status=503) from None
        self._ok_at = time.monotonic()


def _probe(request: Request) -> HealthProbe:
    state = request.app.state
    probe = getattr(state, "health_probe", None)
    if probe is None:
        probe = state.health_probe = HealthProbe(context(request).storage)
    return probe


async def healthz(request: Request) -> Response:
    await _probe(request).check()
    body = json.dumps({"storage": "ok"}).encode()
    headers = {**API_VERSION_HEADER, "Cache-Control": "no-store"}
    if request.method == "HEAD":
        return Response(status_code=200, headers={**headers, "Content-Length": str(len(body))},
                        media_type="application/json")
    return Response(body, headers=headers, media_type="application/json")
