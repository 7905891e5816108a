"""What every handler needs, built once by create_app and kept in `app.state.ctx`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from storage import Storage

from .access import Authorizer
from .settings import Settings


@dataclass(frozen=True)
class RegistryContext:
    settings: Settings
    storage: Storage
    authorizer: Authorizer


def context(request: Request) -> RegistryContext:
    ctx: RegistryContext = request.app.state.ctx
    return ctx
