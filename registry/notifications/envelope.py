"""Distribution's notification format, so that receivers written for Distribution (and its
`application/vnd.docker.distribution.events.v1+json` envelope) take ours unchanged, and the
signature over the exact bytes sent.

Our actions map onto Distribution's three (registry.events lists ours):

| ours | Distribution's | target |
| --- | --- | --- |
| `manifest.push`, `blob.push` | `push` | mediaType, size, digest, length, repository, url (, tag) |
| `manifest.pull`, `blob.pull` | `pull` | the same |
| `manifest.delete`, `blob.delete` | `delete` | digest, repository |
| `tag.delete` | `delete` | repository, tag |

Fields are left out when empty, as Distribution's `omitempty` does, except `request.id`,
`request.method` and `request.useragent`, which it always sends; `actor` and `source` are always
objects. A blob's media type is `application/octet-stream`, as Distribution reports blobs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..events import Event

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
SIGNATURE_HEADER = "X-Cargobay-Signature"
BLOB_MEDIA_TYPE = "application/octet-stream"

#: Our action → Distribution's. Nothing else is sent.
ACTIONS = {
    "manifest.push": "push", "blob.push": "push",
    "manifest.pull": "pull", "blob.pull": "pull",
    "manifest.delete": "delete", "blob.delete": "delete", "tag.delete": "delete",
}


@dataclass(frozen=True, slots=True)
class Source:
    """The registry process that made the event (Distribution's `source`): `addr` is the host's
    name and the port it serves, `instance_id` changes with every start."""

    addr: str
    instance_id: str

    @classmethod
    def here(cls, port: int) -> Source:
        return cls(f"{socket.gethostname()}:{port}", str(uuid.uuid4()))


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with microseconds, as Go's time.Time marshals (`2026-12-07T10:15:02.118204Z`)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _target(event: Event, action: str, base_url: str) -> dict[str, Any]:
    kind = event.action.partition(".")[0]
    if action == "delete":
        if kind == "tag":
            return {"repository": event.repository, "tag": event.tag}
        return {"digest": event.digest, "repository": event.repository}
    media_type = event.media_type or (BLOB_MEDIA_TYPE if kind == "blob" else "")
    where = "manifests" if kind == "manifest" else "blobs"
    target: dict[str, Any] = {
        "mediaType": media_type,
        "size": event.size,
        "digest": event.digest,
        "length": event.size,
        "repository": event.repository,
        "url": f"{base_url}/v2/{event.repository}/{where}/{event.digest}" if base_url and event.digest else "",
        "tag": event.tag,
    }
    return {key: value for key, value in target.items() if value}


def distribution_event(event: Event, source: Source, base_url: str) -> dict[str, Any] | None:
    """`event` as Distribution would have sent it; None for an action notifications do not carry.
    `base_url` (`https://registry.example.com`) makes the target's `url`; empty: no url."""
    action = ACTIONS.get(event.action)
    if action is None:
        return None
    request = {"id": event.request_id, "addr": event.client, "host": event.host, "method": event.method,
               "useragent": event.user_agent}
    return {
        "id": event.id,
        "timestamp": timestamp(event.time),
        "action": action,
        "target": _target(event, action, base_url),
        "request": {k: v for k, v in request.items() if v or k in ("id", "method", "useragent")},
        "actor": {"name": event.user} if event.user else {},
        "source": {"addr": source.addr, "instanceID": source.instance_id},
    }


def encode(record: dict[str, Any]) -> bytes:
    """One event's JSON, compact as Go writes it: what is queued, and sent byte for byte."""
    return json.dumps(record, separators=(",", ":")).encode()


def envelope(events: Sequence[bytes]) -> bytes:
    """The body of one delivery: `{"events":[...]}` around events as `encode` made them."""
    return b'{"events":[' + b",".join(events) + b"]}"


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Cargobay-Signature` value of `body`: `sha256=` and the hex HMAC-SHA256 under `secret`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
