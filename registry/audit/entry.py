"""An audit entry: what one event becomes in the trail (one JSON object on one line), and the
readable line `registry audit` prints for it.

The line holds, in this order, `time` (ISO 8601 UTC, microseconds), `id` (the event's), `action`,
then only what is set: `repository`, `tag`, `digest`, `from` and `to` (a tag move's digests),
`user`, `client`, `request_id`, `detail`, `figures`. Nothing else of an event is written: no
header, no body, no credentials (events carry none), so no secret reaches the trail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..events import ACTIONS, Event

#: What the trail records: every change and every decision about access; not pulls, and not blob
#: uploads (a push is audited by its manifest; a blob nothing refers to changes nothing).
AUDITED = tuple(action for action in ACTIONS if not action.endswith(".pull") and action != "blob.push")


_WHO = {"login.failed": "as", "robot.create": "robot"}


def iso_time(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time; one without a zone is UTC. ValueError if none."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def entry_of(event: Event) -> dict[str, Any]:
    entry: dict[str, Any] = {"time": iso_time(event.time), "id": event.id, "action": event.action}
    for name in ("repository", "tag", "digest"):
        if value := getattr(event, name):
            entry[name] = value
    if event.action == "tag.move":
        entry["from"], entry["to"] = event.previous, event.digest
    for name in ("user", "client", "request_id"):
        if value := getattr(event, name):
            entry[name] = value
    if event.detail:
        entry["detail"] = " ".join(event.detail.split())  # one line, whatever the message was
    if event.figures:
        entry["figures"] = dict(event.figures)
    return entry


def entry_line(event: Event) -> str:
    """The event as the trail's line (without its newline)."""
    return json.dumps(entry_of(event), ensure_ascii=False, separators=(", ", ": "))


def readable(entry: Mapping[str, Any]) -> str:
    """One line for people: time, action, what, who, from where, which request, why.

    `2026-12-07T10:15:03.402113Z tag.move team/app:v1 sha256:1f… -> sha256:9c… by ci from 10.0.3.7 [5f0c9a1e]`
    """
    parts = [str(entry.get("time", "?")), f"{entry.get('action', '?'):<16}"]
    what = str(entry.get("repository", ""))
    if entry.get("tag"):
        what += f":{entry['tag']}"
    if entry.get("action") == "tag.move":
        what += f" {entry.get('from', '?')} -> {entry.get('to', '?')}"
    elif entry.get("digest"):
        what += f"@{entry['digest']}" if what else str(entry["digest"])
    if what:
        parts.append(what)
    if entry.get("user"):  # a failed login names who it tried to be; robot.create, the robot made
        parts.append(f"{_WHO.get(str(entry.get('action')), 'by')} {entry['user']}")
    if entry.get("client"):
        parts.append(f"from {entry['client']}")
    if entry.get("request_id"):
        parts.append(f"[{entry['request_id']}]")
    if entry.get("detail"):
        parts.append(f"- {entry['detail']}")
    elif isinstance(entry.get("figures"), Mapping):
        parts.append("- " + ", ".join(f"{k} {v}" for k, v in entry["figures"].items()))
    return " ".join(parts)
