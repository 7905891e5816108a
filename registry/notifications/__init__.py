"""Webhook notifications (docs/operations.md, "Notifications"): every push, pull and delete an
endpoint asks for, in Distribution's envelope, signed, kept in storage until the endpoint took it.

- `registry/notifications/envelope.py`: Distribution's event format, the envelope, the signature;
- `registry/notifications/endpoints.py`: one endpoint's filters, queue and key;
- `registry/notifications/listener.py`: the `Listener` that queues events before the request answers;
- `registry/notifications/dispatch.py`: the background task that delivers a queue while holding its lease;
- `registry/notifications/delivery.py`: one POST; `registry/notifications/metrics.py`: the metrics.

The front door: `NotificationListener` (registry.operations adds it to the listeners) and
`dispatchers` (registry.app runs them in its lifespan).
"""

from __future__ import annotations

import os
import socket
import uuid

from storage import Storage, open_queue

from ..settings import Settings
from .delivery import Sender
from .dispatch import Dispatcher
from .endpoints import Endpoint, load_secret
from .envelope import ACTIONS, EVENTS_MEDIA_TYPE, SIGNATURE_HEADER, distribution_event, sign
from .listener import NotificationListener


def dispatchers(settings: Settings, storage: Storage) -> list[Dispatcher]:
    """One dispatcher per endpoint, for this process (keys read now: one that cannot be read stops
    the start with a SettingsError naming it). Run each one's `run()` as a task."""
    holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    found = []
    for i, configured in enumerate(settings.notifications.endpoints):
        endpoint = Endpoint(configured)
        secret = load_secret(configured, f"notifications.endpoints[{i}].secret_file")
        sender = Sender(configured.url, secret, configured.timeout)
        found.append(Dispatcher(endpoint, open_queue(storage, endpoint.queue_name), sender, holder))
    return found


__all__ = [
    "ACTIONS",
    "EVENTS_MEDIA_TYPE",
    "SIGNATURE_HEADER",
    "Dispatcher",
    "NotificationListener",
    "dispatchers",
    "distribution_event",
    "sign",
]
