"""`create_app(settings)`: the Starlette application and its background maintenance; `create_metrics_app`:
the one of the metrics listener (`metrics.listen`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocispec.errors import OCIValidationError
from storage import Storage, StorageDriver, StorageError

from . import metrics
from .access import AllowAll, Authorizer
from .context import RegistryContext
from .errors import BodyCutShort, ClientHungUp, RegistryError, handle_exception, handle_hangup
from .handlers.base import run
from .lifecycle.immutable import install as install_immutable_tags
from .lifecycle.quota import Quotas
from .lifecycle.quota import install as install_quotas
from .lifecycle.schedule import jobs, run_every
from .notifications import dispatchers
from .operations import events_for, request_observers
from .proxy import ProxyRouting, PullThrough
from .requestinfo import RequestTracking, TrustedPeers
from .routes import routes
from .server import BODY_ERROR
from .settings import Settings
from .store import serving_storage, storage_driver
from .ui import console_routes

if TYPE_CHECKING:  # the auth package loads only when auth is on
    from .auth.service import AuthService

log = logging.getLogger("cargobay.registry")


def create_app(settings: Settings, storage: Storage | None = None, authorizer: Authorizer | None = None) -> Starlette:
    storage = storage or serving_storage(settings, _driver(settings))
    extra_routes: list[BaseRoute] = []
    service: AuthService | None = None
    if authorizer is None and settings.auth.enabled:
        authorizer, extra_routes, service = _auth(settings)
    observe = metrics.ProxyMetrics() if settings.metrics.enabled else None
    proxy = PullThrough(settings, storage, observe=observe) if settings.proxy.upstreams else None
    ctx = RegistryContext(settings, storage, authorizer or AllowAll(), events_for(settings, storage, serving=True),
                          proxy)
    quotas = install_quotas(storage, settings)  # counts usage from here on (registry.lifecycle.quota)
    if service is not None or isinstance(authorizer or AllowAll(), AllowAll):
        # The web console, `ui.enabled` (registry.ui): it knows the built-in auth's users and rules, so
        # with an authorizer of another kind (tests plug in their own) it stays off rather than open.
        extra_routes += console_routes(settings, service, proxy)
    if settings.metrics.enabled and not settings.metrics.listen:
        extra_routes.append(_metrics_route(settings, storage, quotas, service))
    notifiers = dispatchers(settings, storage)  # reads the endpoints' keys now: a bad one stops the start

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # What start-up built lives as long as the process: out of the cyclic collector's way, so its
        # passes (every few hundred requests' worth of allocations) scan only what requests made.
        gc.freeze()
        tasks = [asyncio.create_task(run_every(job, storage, settings, ctx.events)) for job in jobs(settings)]
        tasks += [asyncio.create_task(notifier.run()) for notifier in notifiers]
        if settings.storage.uploads.purge_interval > 0:
            tasks.append(asyncio.create_task(_purge_loop(ctx)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    middleware = [Middleware(BodyErrors)]
    if proxy is not None:
        # Names are canonical before anything (the routes, the authorizer) sees them.
        middleware.insert(0, Middleware(ProxyRouting, router=proxy.router,
                                        run_exists=lambda name: run(_exists_locally, storage, name)))
    # Outermost: every request gets its id and record first, and is observed however it ends.
    middleware.insert(0, Middleware(RequestTracking, observers=request_observers(settings),
                                    trusted=TrustedPeers(settings.http.trusted_proxies)))
    app = Starlette(routes=routes() + extra_routes, lifespan=lifespan, exception_handlers=_exception_handlers(),
                    middleware=middleware)
    app.state.ctx = ctx
    app.state.quotas = quotas
    app.state.immutable_tags = install_immutable_tags(settings)  # registry.lifecycle.immutable
    return app


def create_metrics_app(settings: Settings) -> Starlette:
    """The application of `metrics.listen`, a listener of its own: `/metrics` and nothing else, with
    the same access rule as on the main listener (`registry serve` runs it in its parent process)."""
    storage = Storage(_driver(settings))
    service = None
    if settings.auth.enabled:
        from .auth.service import AuthService

        service = AuthService.from_settings(settings)
    app = Starlette(routes=[_metrics_route(settings, storage, install_quotas(storage, settings), service)],
                    exception_handlers=_exception_handlers())
    # What the login checks need: failed logins are events (the audit trail, the metrics) here too.
    app.state.ctx = RegistryContext(settings, storage, AllowAll(), events_for(settings, storage, serving=True))
    return app


def _driver(settings: Settings) -> StorageDriver:
    driver = storage_driver(settings)
    return metrics.instrument(driver) if settings.metrics.enabled else driver


def _metrics_route(settings: Settings, storage: Storage, quotas: Quotas | None,
                   service: AuthService | None) -> BaseRoute:
    return metrics.metrics_route(metrics.MetricsAccess(settings, service), [metrics.StoredFigures(storage, quotas)])


def _exception_handlers() -> dict[Any, Any]:
    handled = (RegistryError, OCIValidationError, StorageError, HTTPException, Exception)
    handlers: dict[Any, Any] = dict.fromkeys(handled, handle_exception)
    # Registered by class, not under Exception, so that Starlette's ExceptionMiddleware answers them
    # and nothing re-raises them into a traceback.
    handlers.update(dict.fromkeys((ClientHungUp, ClientDisconnect), handle_hangup))
    return handlers


class BodyErrors:
    """Raises, from the handler's read of a request body's end, what the HTTP protocol saw wrong with
    that body (registry.server's BODY_ERROR: cut short by a half-close, or followed by more bytes
    than its Content-Length), so a short body is answered 400 SIZE_INVALID, never taken as whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        failed: str | None = None

        async def checked_receive() -> Message:
            nonlocal failed
            if failed:
                raise BodyCutShort(failed)
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                failed = scope.get("extensions", {}).get(BODY_ERROR)
                if failed:  # the bytes that came still reach the handler (an upload keeps them); the next read fails
                    return {**message, "more_body": True}
            return message

        await self.app(scope, checked_receive, send)


def _exists_locally(storage: Storage, name: str) -> bool:
    return storage.repository(name).exists()


def _auth(settings: Settings) -> tuple[Authorizer, list[BaseRoute], AuthService]:
    """The token authorizer, the token endpoint routes and the service behind both (auth.enabled);
    imported only when used."""
    from .auth.authorizer import TokenAuthorizer
    from .auth.endpoint import token_routes
    from .auth.service import AuthService

    service = AuthService.from_settings(settings)
    return TokenAuthorizer(service), list(token_routes(service)), service


async def _purge_loop(ctx: RegistryContext) -> None:
    """Remove abandoned uploads every purge_interval (first pass shortly after start)."""
    uploads = ctx.settings.storage.uploads
    delay = min(60.0, uploads.purge_interval)
    while True:
        await asyncio.sleep(delay)
        delay = uploads.purge_interval
        try:
            removed = await run(ctx.storage.purge_uploads, uploads.purge_age)
            if removed:
                log.info("purged %d abandoned uploads", removed)
        except Exception:
            log.exception("upload purge failed")
