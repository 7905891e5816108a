"""What happened to the registry's content, and every decision about access: one `Event` per fact,
handed to each `Listener` that wants it (the audit trail, webhook notifications, metrics).

Handlers emit after the change succeeded (`await events.emit(...)`), lifecycle jobs and commands
with `record`. A listener's failure is logged and never fails the request or the job: the change
has happened either way. Listeners are called in a worker thread, so they may block on storage;
`wants` is asked on the event loop and must be quick, so a pull costs nothing unless a listener
asked for pulls.

Actions (the `action` field):

| action | when | fields besides the request's |
| --- | --- | --- |
| `manifest.push` | a PUT stored it (once per tag, or once untagged) | repository, digest, media_type, size, tag |
| `tag.move` | that push pointed an existing tag at another digest | repository, tag, previous, digest |
| `blob.push` | an upload completed, or a blob was mounted | repository, digest, size |
| `manifest.pull`, `blob.pull` | a GET (not a HEAD) answered | repository, digest, media_type, size, tag |
| `manifest.delete`, `tag.delete`, `blob.delete` | a DELETE removed it | repository, digest, tag |
| `push.refused`, `delete.refused` | a push or delete got 403 (rules, immutable tags, quotas) | repository, detail |
| `login.failed` | wrong credentials, or too many failures | user (the name tried), detail |
| `robot.create` | `registry robot create` | user (the robot), detail |
| `gc.run` | a garbage collection finished | figures |
| `retention.remove` | retention removed a tag or an untagged manifest | repository, tag, digest, detail |
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from starlette.requests import Request

from .handlers.base import run
from .requestinfo import request_info

log = logging.getLogger("cargobay.registry")

ACTIONS = ("manifest.push", "tag.move", "blob.push", "manifest.pull", "blob.pull", "manifest.delete", "tag.delete",
           "blob.delete", "push.refused", "delete.refused", "login.failed", "robot.create", "gc.run",
           "retention.remove")


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Event:
    action: str
    repository: str = ""
    digest: str = ""
    tag: str = ""
    media_type: str = ""
    size: int = 0
    #: `tag.move`: the digest the tag named before.
    previous: str = ""
    #: Why (a refusal's message, a retention rule), in words.
    detail: str = ""
    #: Counts of a job's run (`gc.run`: blobs_removed, bytes_freed, ...).
    figures: Mapping[str, int] = field(default_factory=dict)
    # -- who and where: the request's, or the job's ------------------------------------------------
    user: str = ""
    client: str = ""
    request_id: str = ""
    method: str = ""
    user_agent: str = ""
    host: str = ""
    id: str = field(default_factory=new_event_id)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """Every field that is set (the audit line, the queued form of a notification)."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value or name in ("action", "id", "time"):
                out[name] = dict(value) if name == "figures" else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        known = {k: v for k, v in data.items() if k in cls.__slots__}
        return cls(**known)


class Listener(Protocol):
    def wants(self, action: str) -> bool:
        """Whether `record` should get events of this action (asked on the event loop: quick)."""

    def record(self, events: Sequence[Event]) -> None:
        """Take the events (in a worker thread; may block on storage)."""


class Events:
    """The listeners, and the one way events reach them."""

    def __init__(self, listeners: Sequence[Listener] = ()) -> None:
        self.listeners = tuple(listeners)
        self._wanted: dict[str, bool] = {}

    def wants(self, action: str) -> bool:
        wanted = self._wanted.get(action)
        if wanted is None:
            wanted = self._wanted[action] = any(listener.wants(action) for listener in self.listeners)
        return wanted

    def record(self, events: Sequence[Event]) -> None:
        """Hand each listener the events it wants (blocking; from a job or a command)."""
        for listener in self.listeners:
            chosen = [event for event in events if listener.wants(event.action)]
            if not chosen:
                continue
            try:
                listener.record(chosen)
            except Exception:  # the change happened: a listener that cannot take it must not undo that
                log.exception("%s could not record %d events (%s)", type(listener).__name__, len(chosen),
                              ", ".join(sorted({e.action for e in chosen})))

    async def emit(self, request: Request, *events: Event) -> None:
        """Record events a request caused, with the request's who and where filled in."""
        wanted = [event for event in events if self.wants(event.action)]
        if not wanted:
            return
        info = request_info(request)
        filled = [replace(event, user=event.user or info.user, client=info.client, request_id=info.id,
                          method=info.method, user_agent=info.user_agent, host=info.host) for event in wanted]
        await run(self.record, filled)
