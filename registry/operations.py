"""What an operator watches, assembled from the settings (docs/operations.md): the observers every
finished request is shown to (the access log, the metrics) and the listeners every event goes to
(the audit trail, the webhooks, the metrics). `create_app` installs them; the lifecycle commands
use `event_listeners` for the events their jobs make."""

from __future__ import annotations

from storage import Storage

from .events import Events, Listener
from .requestinfo import RequestObserver
from .settings import Settings


def request_observers(settings: Settings) -> list[RequestObserver]:
    observers: list[RequestObserver] = []
    if settings.log.access_enabled:
        from .logs import AccessLog

        observers.append(AccessLog(json_lines=settings.log.format == "json"))
    if settings.metrics.enabled:
        from .metrics import RequestMetrics  # on first use: `registry serve` readies prometheus_client first

        observers.append(RequestMetrics(settings.metrics.repository_labels))
    return observers


def event_listeners(settings: Settings, storage: Storage, serving: bool = False) -> list[Listener]:
    """The listeners these settings turn on. `serving`: for `registry serve`, whose metrics count
    events too (a command's process is scraped by nobody: it counts nothing)."""
    listeners: list[Listener] = []
    if settings.audit.path or settings.audit.storage:
        from .audit import AuditTrail

        listeners.append(AuditTrail.from_settings(settings.audit, storage))
    if settings.notifications.endpoints:
        from .notifications import NotificationListener  # on first use: the commands rarely need it

        listeners.append(NotificationListener(settings, storage))
    if serving and settings.metrics.enabled:
        from .metrics import EventMetrics

        listeners.append(EventMetrics())
    return listeners


def events_for(settings: Settings, storage: Storage, serving: bool = False) -> Events:
    return Events(event_listeners(settings, storage, serving))
