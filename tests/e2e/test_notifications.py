"""Webhook notifications through a real `registry serve` and a real receiver on loopback
(tests/support/webhooks.py):

- pushes, pulls and deletes reach the receiver in Distribution's envelope, each field as pushed,
  signed over the exact body; while the receiver answers 500, then is down, and across a restart
  of the registry, the events wait in storage and every one arrives once it is back, once;
- each endpoint gets what its filters ask for (repository globs; pulls only when asked);
- two replicas over one SeaweedFS bucket: each event is delivered by one of them, exactly once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.images import OCI_MANIFEST, Image, push_image, simple_image
from tests.support.leaks import remember_secret, remember_secrets
from tests.support.s3replicas import start_replicas, stop_all, wait_for
from tests.support.s3servers import S3Server
from tests.support.servers import start_cargobay
from tests.support.webhooks import WebhookReceiver

from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB = "application/octet-stream"
QUICK = {"backoff": "50ms", "max_backoff": "300ms", "timeout": "2s"}
#: The endpoints' keys; they, and every signature sent, must never reach a log (tests/support/leaks.py).
ALL_KEY = remember_secret("all-Webhook-Key-1", "webhook secret")
TEAM_KEY = remember_secret("team-Webhook-Key-2", "webhook secret")
CI_KEY = remember_secret("ci-Webhook-Key-3", "webhook secret")


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver()
    yield hooks
    hooks.stop()
    remember_secrets([d.headers.get("x-cargobay-signature", "") for d in hooks.deliveries()], "webhook signature")


def by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["id"]: event for event in events}


def find(events: list[dict[str, Any]], action: str, **target: Any) -> dict[str, Any]:
    """The one event of `action` whose target has these fields."""
    found = [e for e in events if e["action"] == action and all(e["target"].get(k) == v for k, v in target.items())]
    assert len(found) == 1, f"{len(found)} {action} events with {target} in {events}"
    return found[0]


def queued(root: Path, endpoint: str) -> list[Path]:
    items = root / "v1" / "queues" / f"notifications-{endpoint}" / "items"
    return [p for p in items.iterdir() if not p.name.startswith(".")] if items.exists() else []


def test_events_wait_through_failures_outage_and_restart_then_arrive_once_signed(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    root = tmp_path / "data"
    (tmp_path / "team.key").write_text(TEAM_KEY + "\n")  # the final newline is no part of the key
    config = {
        "storage": {"filesystem": {"root": str(root)}, "delete": {"enabled": True}},
        "notifications": {"endpoints": [
            {"name": "all", "url": receiver.url("/all"), "actions": ["push", "pull", "delete"], **QUICK},
            {"name": "team", "url": receiver.url("/team"), "repositories": ["team/*"],
             "secret_file": str(tmp_path / "team.key"), **QUICK},
        ]},
    }
    env = {"CARGOBAY_NOTIFICATIONS_ALL_SECRET": ALL_KEY}
    app, tool = simple_image("notify-app"), simple_image("notify-tool")
    receiver.status = 500
    server = start_cargobay(tmp_path / "first", config=config, env=env)
    try:
        with httpx.Client(timeout=30) as client:
            push_image(client, server.url, "team/app", app, "v1")
            push_image(client, server.url, "other/tool", tool, "v2")
            client.head(f"{server.url}/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})  # no pull
            client.get(f"{server.url}/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).raise_for_status()
            client.get(f"{server.url}/v2/team/app/blobs/{app.layers[0].digest}").raise_for_status()
            for path in ("other/tool/manifests/v2", f"other/tool/blobs/{tool.layers[1].digest}",
                         f"team/app/manifests/{app.digest}"):
                assert client.delete(f"{server.url}/v2/{path}").status_code == 202
        # Answered: every event is in storage already (8 pushes, 2 pulls, 3 deletes; team: 4 pushes, 1 delete).
        assert (len(queued(root, "all")), len(queued(root, "team"))) == (13, 5)
        wait_for(lambda: {d.path for d in receiver.deliveries() if d.status == 500} == {"/all", "/team"}, 30,
                 what="refused deliveries to both endpoints")
        receiver.stop()
        server.stop()
        first = server.url  # the events' urls name the server that took the requests
        server = start_cargobay(tmp_path / "second", config=config, env=env)
        receiver.status = 200
        receiver.start()
        wait_for(lambda: len(by_id(receiver.accepted_events("/all"))) == 13
                 and len(by_id(receiver.accepted_events("/team"))) == 5, 60, what="every event after the outage")
        wait_for(lambda: not queued(root, "all") and not queued(root, "team"), 30, what="the queues to empty")
    finally:
        server.stop()

    for path, key in (("/all", ALL_KEY), ("/team", TEAM_KEY)):
        deliveries = receiver.deliveries(path)
        assert all(d.signed_by(key.encode()) for d in deliveries), f"a delivery to {path} is not signed with its key"
        assert {d.headers["content-type"] for d in deliveries} == {EVENTS_MEDIA_TYPE}
        accepted = receiver.accepted_events(path)
        assert max(Counter(e["id"] for e in accepted).values()) == 1, "an event was delivered twice"
        retried = {e["id"] for d in deliveries if not d.accepted for e in d.events()}
        assert retried <= {e["id"] for e in accepted}, "a retry carried an event under another id"
        assert [e["timestamp"] for e in accepted] == sorted(e["timestamp"] for e in accepted)

    events = receiver.accepted_events("/all")
    pushed = find(events, "push", digest=app.digest)
    assert pushed["target"] == {"mediaType": OCI_MANIFEST, "size": len(app.manifest), "digest": app.digest,
                                "length": len(app.manifest), "repository": "team/app",
                                "url": f"{first}/v2/team/app/manifests/{app.digest}", "tag": "v1"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", pushed["timestamp"])
    assert pushed["request"]["method"] == "PUT" and pushed["request"]["useragent"].startswith("python-httpx/")
    assert pushed["request"]["addr"] == "127.0.0.1" and re.fullmatch(r"[0-9a-f]{16}", pushed["request"]["id"])
    assert pushed["actor"] == {} and set(pushed["source"]) == {"addr", "instanceID"}
    layer = app.layers[0]
    blob_push = find(events, "push", digest=layer.digest)
    assert blob_push["target"] == {"mediaType": BLOB, "size": layer.size, "digest": layer.digest,
                                   "length": layer.size, "repository": "team/app",
                                   "url": f"{first}/v2/team/app/blobs/{layer.digest}"}
    assert find(events, "pull", digest=app.digest)["target"]["tag"] == "v1"
    assert find(events, "pull", digest=layer.digest)["target"]["size"] == layer.size
    assert [e["target"] for e in events if e["action"] == "delete"] == [
        {"repository": "other/tool", "tag": "v2"},
        {"digest": tool.layers[1].digest, "repository": "other/tool"},
        {"digest": app.digest, "repository": "team/app"},
    ]
    team = receiver.accepted_events("/team")
    assert {e["target"]["repository"] for e in team} == {"team/app"}
    assert Counter(e["action"] for e in team) == {"push": 4, "delete": 1}  # no pulls: not asked for


def pushes_and_pull(image: Image) -> int:
    return len(image.blobs()) + 1 + 1


def test_two_replicas_deliver_each_event_exactly_once(tmp_path: Path, receiver: WebhookReceiver,
                                                      seaweedfs: S3Server, s3_bucket: str) -> None:  # noqa: F811
    config = {"notifications": {"endpoints": [{"name": "ci", "url": receiver.url(), "actions": ["push", "pull"],
                                               **QUICK}]}}
    replicas = start_replicas(tmp_path, seaweedfs, s3_bucket, 2, config=config,
                              env={"CARGOBAY_NOTIFICATIONS_CI_SECRET": CI_KEY})
    images = [simple_image(f"replicated-{i}") for i in range(4)]
    try:
        with httpx.Client(timeout=30) as client:
            for i, image in enumerate(images):
                here, there = replicas[i % 2], replicas[(i + 1) % 2]
                push_image(client, here.url, f"team/r{i}", image, "v1")
                client.get(f"{there.url}/v2/team/r{i}/manifests/v1", headers={"Accept": OCI_MANIFEST}
                           ).raise_for_status()
        expected = sum(pushes_and_pull(image) for image in images)
        wait_for(lambda: len(by_id(receiver.accepted_events())) == expected, 60, what="every event")
        s3 = seaweedfs.client()
        wait_for(lambda: not s3.list_objects_v2(Bucket=s3_bucket, Prefix="v1/queues/notifications-ci/items/"
                                                ).get("KeyCount"), 30, what="the queue to empty")
    finally:
        stop_all(replicas)
    events = receiver.accepted_events()
    assert Counter(e["id"] for e in events).most_common(1)[0][1] == 1, "an event was delivered by both replicas"
    assert len({e["source"]["instanceID"] for e in events}) == 2  # made on both, delivered from one queue
    assert all(d.signed_by(CI_KEY.encode()) for d in receiver.deliveries())
