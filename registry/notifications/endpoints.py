"""One configured receiver (`notifications.endpoints[]`): which events it gets (repository globs
as in the access rules, Distribution's actions), the queue they wait in, and its signing key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from ..auth.rules import compile_pattern
from ..settings import NotificationEndpoint, SettingsError, notification_secret_env
from .envelope import ACTIONS

#: Each endpoint's queue in storage is `v1/queues/notifications-<name>/` (storage.queue).
QUEUE_PREFIX = "notifications-"


class Endpoint:
    def __init__(self, settings: NotificationEndpoint) -> None:
        self.settings = settings
        self.name = settings.name
        self.queue_name = QUEUE_PREFIX + settings.name
        self.actions = frozenset(settings.actions)
        self._patterns: tuple[re.Pattern[str], ...] = tuple(compile_pattern(p) for p in settings.repositories)

    def wants_action(self, action: str) -> bool:
        """Whether events of our `action` (`manifest.push`…) may be for this endpoint."""
        mapped = ACTIONS.get(action)
        return mapped is not None and mapped in self.actions

    def wants(self, action: str, repository: str) -> bool:
        return self.wants_action(action) and any(p.fullmatch(repository) for p in self._patterns)


def load_secret(settings: NotificationEndpoint, where: str, environ: Mapping[str, str] | None = None) -> bytes:
    """The endpoint's signing key: `secret_file`'s content, else CARGOBAY_NOTIFICATIONS_<NAME>_SECRET,
    without surrounding whitespace (a file's final newline is no part of it); b"" for none. A
    `secret_file` that cannot be read, or holds nothing, stops the start (`where`: the setting's
    key, `notifications.endpoints[0].secret_file`)."""
    if settings.secret_file:
        try:
            secret = Path(settings.secret_file).read_bytes().strip()
        except OSError as exc:
            raise SettingsError(f"{where}: cannot read {settings.secret_file}: {exc.strerror or exc}") from None
        if not secret:
            raise SettingsError(f"{where}: {settings.secret_file} is empty")
        return secret
    environ = os.environ if environ is None else environ
    return environ.get(notification_secret_env(settings.name), "").strip().encode()
