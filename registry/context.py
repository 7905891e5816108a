"""What every handler needs, built once by create_app and kept in `app.state.ctx`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from storage import Storage

from .access import Authorizer
from .settings import Settings

if TYPE_CHECKING:  # modules these import use this one: only the types are needed here
    from .events import Events
    from .proxy import PullThrough


@dataclass(frozen=True)
class RegistryContext:
    settings: Settings
    storage: Storage
    authorizer: Authorizer
    events: Events  # what happened, to the audit trail, the webhooks and the metrics (registry.events)
    proxy: PullThrough | None = None  # the pull-through cache, when `proxy.upstreams` names any


def context(request: Request) -> RegistryContext:
    ctx: RegistryContext = request.app.state.ctx
    return ctx
