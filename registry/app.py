"""`create_app(settings)`: the Starlette application and its background maintenance."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from ocispec.errors import OCIValidationError
from storage.driver.base import StorageDriver
from storage.driver.factory import create_driver
from storage.errors import StorageError
from storage.repository import Storage

from .access import AllowAll, Authorizer
from .context import RegistryContext
from .errors import RegistryError, handle_exception
from .handlers.base import run
from .routes import routes
from .settings import Settings, to_dict

log = logging.getLogger("cargobay.registry")


def storage_driver(settings: Settings) -> StorageDriver:
    """The driver the `storage.driver` section names, built from that section's options."""
    storage = settings.storage
    options = to_dict(getattr(storage, storage.driver))
    if storage.driver == "s3":
        # Settings cannot hold "unset": an empty string (or `auto`) leaves the option to the
        # driver's default, e.g. credentials from the standard AWS chain.
        options = {name: value for name, value in options.items() if value not in ("", "auto")}
    return create_driver(storage.driver, options)


def create_app(settings: Settings, storage: Storage | None = None, authorizer: Authorizer | None = None) -> Starlette:
    storage = storage or Storage(storage_driver(settings))
    extra_routes: list[BaseRoute] = []
    if authorizer is None and settings.auth.enabled:
        authorizer, extra_routes = _auth(settings)
    ctx = RegistryContext(settings, storage, authorizer or AllowAll())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_purge_loop(ctx)) if settings.storage.uploads.purge_interval > 0 else None
        try:
            yield
        finally:
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    handled = (RegistryError, OCIValidationError, StorageError, HTTPException, Exception)
    app = Starlette(routes=routes() + extra_routes, lifespan=lifespan,
                    exception_handlers=dict.fromkeys(handled, handle_exception))
    app.state.ctx = ctx
    return app


def _auth(settings: Settings) -> tuple[Authorizer, list[BaseRoute]]:
    """The token authorizer and the token endpoint routes (auth.enabled); imported only when used."""
    from .auth.authorizer import TokenAuthorizer
    from .auth.endpoint import token_routes
    from .auth.service import AuthService

    service = AuthService.from_settings(settings)
    return TokenAuthorizer(service), list(token_routes(service))


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
