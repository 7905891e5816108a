"""The settings of operating the registry (docs/operations.md): logs, metrics, the audit trail,
webhook notifications and the web console (docs/ui.md). Frozen dataclasses like the rest of the
schema (registry.settings.schema composes them into `Settings`); this module imports nothing of
the registry, and `help_text` is the one way a field documents itself, here and in the schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The actions a notification endpoint may ask for (Distribution's event actions).
NOTIFY_ACTIONS = ("push", "delete", "pull")


def help_text(text: str, **extra: Any) -> dict[str, Any]:
    """A field's metadata: its help (docs/configuration.md) and what the loader accepts
    (`duration`, `size`, `min`, `max`, `choices`)."""
    return {"help": text, **extra}


@dataclass(frozen=True)
class LogSettings:
    level: str = field(default="info", metadata=help_text(
        "Log level.", choices=("debug", "info", "warning", "error")))
    format: str = field(default="text", metadata=help_text(
        "`text`: one readable line per record. `json`: one JSON object per line with time, level, request id, "
        "client address, user, repository and message (access lines add action, status, bytes and duration).",
        choices=("text", "json")))
    access: str = field(default="auto", metadata=help_text(
        "One access-log line per HTTP request, in `log.format`. `auto`: on with `json`, off with `text`.",
        choices=("auto", "true", "false")))

    @property
    def access_enabled(self) -> bool:
        return self.access == "true" or (self.access == "auto" and self.format == "json")


@dataclass(frozen=True)
class MetricsSettings:
    """`metrics`: Prometheus metrics at `GET /metrics`."""

    enabled: bool = field(default=True, metadata=help_text(
        "Collect metrics and serve them at `/metrics` (the Prometheus text format, summed over every worker)."))
    listen: str = field(default="", metadata=help_text(
        "`host:port` of a listener of its own for `/metrics` (e.g. `0.0.0.0:9090`), apart from the API. "
        "Empty: `/metrics` is served on the main listener."))
    anonymous: bool = field(default=False, metadata=help_text(
        "Let anyone read `/metrics`. Otherwise it needs Basic credentials (or a token) of a user whose access "
        "rules say `metrics: true`; with `auth.enabled` off nobody has those, so only this opens it."))
    repository_labels: bool = field(default=False, metadata=help_text(
        "Label request metrics with the repository name. Off: no metric names a repository (names are "
        "unbounded, and they are information)."))


@dataclass(frozen=True)
class AuditSettings:
    """`audit`: the append-only trail of every change and every decision about access."""

    path: str = field(default="", metadata=help_text(
        "File the trail is appended to, one JSON object per line. Empty: no file."))
    storage: bool = field(default=False, metadata=help_text(
        "Also keep the trail in storage (below `v1/journals/audit/`), where every replica's entries meet and "
        "`registry audit` reads them."))


@dataclass(frozen=True)
class NotificationEndpoint:
    """One receiver of webhook notifications (`notifications.endpoints[]`)."""

    name: str = field(default="", metadata=help_text(
        "The endpoint's name (a-z, 0-9, -): in logs and metrics, and in its secret's variable."))
    url: str = field(default="", metadata=help_text("Where the events are POSTed (http or https)."))
    secret_file: str = field(default="", metadata=help_text(
        "File holding the key of the `X-Cargobay-Signature: sha256=<hex>` header (HMAC-SHA256 of the body), "
        "or the variable `CARGOBAY_NOTIFICATIONS_<NAME>_SECRET`. Neither: the events go unsigned."))
    repositories: tuple[str, ...] = field(default=("*",), metadata=help_text(
        "Repository globs whose events this endpoint gets (as in the access rules: `*` crosses `/`)."))
    actions: tuple[str, ...] = field(default=("push", "delete"), metadata=help_text(
        "Which events to send, a list of actions (pulls are many: ask for them only when needed).",
        choices=NOTIFY_ACTIONS))
    timeout: float = field(default=5.0, metadata=help_text(
        "How long one delivery may take before it counts as failed.", duration=True, min=0.1))
    backoff: float = field(default=1.0, metadata=help_text(
        "Wait before the first retry of a failed delivery; each further one waits twice as long.",
        duration=True, min=0.01))
    max_backoff: float = field(default=300.0, metadata=help_text(
        "The longest wait between retries.", duration=True, min=0.01))


@dataclass(frozen=True)
class NotificationSettings:
    endpoints: tuple[NotificationEndpoint, ...] = field(default=(), metadata=help_text(
        "Webhook endpoints: events in Distribution's envelope "
        "(`application/vnd.docker.distribution.events.v1+json`), kept in storage until delivered."))


@dataclass(frozen=True)
class UiSettings:
    """`ui`: the web console at `/ui/` (docs/ui.md)."""

    enabled: bool = field(default=True, metadata=help_text(
        "Serve the web console at `/ui/` on the API's listener: browse repositories, tags and images, and "
        "delete where the rules allow. Off: `/ui/` answers 404."))
    session_ttl: float = field(default=8 * 3600.0, metadata=help_text(
        "How long a console login lasts (with `auth.enabled`), then the user logs in again. "
        "A duration: `90`, `30m`, `8h`.", duration=True, min=1.0, max=30 * 86400.0))
    page_size: int = field(default=50, metadata=help_text(
        "Rows on one page of the console's lists (repositories, tags); `?n=` asks for up to `limits.max_page_size`.",
        min=1, max=1000))
