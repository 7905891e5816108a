"""The audit trail against a real `registry serve` with auth on, an audit file and the trail in
storage: every audited action (pushes, tag moves, deletes, refusals, a failed login, `registry robot
create`, `registry retention`, `registry gc`) leaves exactly one entry with the right user and
client, in the file and in storage alike; `registry audit` reads them back in order and filters by
repository glob, time, action and user; two replicas over one store (one of them with two worker
processes, all three appending to one file) meet in `registry audit`.

The same server logs JSON (`log.format: json`), so its log, after all that, shows the JSON logs:
every line an object with time, level and message, every request an access line with its fields,
and the request id a trusted client sent echoed and logged, an untrusted or insane one replaced."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.registry.test_auth_api import auth_config, bearer, get_token
from tests.support.images import Image, push_image, simple_image
from tests.support.leaks import remember_secret
from tests.support.servers import REPO_ROOT, RunningServer, start_cargobay

LOCAL = "127.0.0.1"
RULES = """\
rules:
  - users: [alice]
    repositories: ["audit/*"]
    actions: [pull, push, delete]
  - users: [bob]
    repositories: ["audit/*"]
    actions: [pull]
"""
REPOS = ("audit/app", "audit/locked", "audit/retained")


@dataclass
class Trail:
    server: RunningServer
    config: dict[str, Any]
    config_path: Path
    audit_path: Path
    images: dict[str, Image] = field(default_factory=dict)

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


def registry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "registry", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=120)


def audit_command(trail: Trail, *args: str) -> tuple[int, str, str]:
    """`registry audit --config <the server's> args`, run in this process (the suite runs it a
    dozen times; `registry audit` as a process is run once): exit status, stdout, stderr."""
    from registry.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["audit", "--config", str(trail.config_path), *args])
    return status, out.getvalue(), err.getvalue()


def audit(trail: Trail, *args: str) -> list[str]:
    """The lines of a `registry audit` that must succeed."""
    status, out, err = audit_command(trail, *args)
    assert status == 0 and err == "", err
    return out.splitlines()


def token(server: RunningServer, user: str, *repositories: str) -> str:
    scopes = [f"repository:{repo}:pull,push,delete" for repo in repositories]
    return remember_secret(get_token(server.url, user, *scopes), "token")


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    workdir = tmp_path_factory.mktemp("audit")
    config = auth_config(workdir, {"alice": "alice-Secret-1", "bob": "bob-Secret-2"}, RULES)
    config["log"] = {"level": "debug", "format": "json"}  # access lines: on with json (log.access auto)
    config["audit"] = {"path": str(workdir / "audit.jsonl"), "storage": True}
    config["policy"] = {"immutable_tags": ["audit/locked:v*"]}
    config["retention"] = {"rules": [{"repositories": ["audit/retained"], "keep_last": 1}]}
    server = start_cargobay(workdir, config=config)
    yield Trail(server, config, workdir / f"config-{server.port}.yaml", workdir / "audit.jsonl")
    server.stop()


@pytest.fixture(scope="module")
def acted(trail: Trail) -> Trail:
    """Every audited action once (pushes and tag moves as they come), by alice, bob, the CLI."""
    url = trail.server.url
    images = trail.images
    images.update({name: simple_image(f"audit-{name}", layer_count=1) for name in ("first", "second", "locked",
                                                                                    "old", "new")})
    with httpx.Client(base_url=url, headers=bearer(token(trail.server, "alice", *REPOS)), timeout=30) as alice:
        push_image(alice, url, "audit/app", images["first"], "v1")
        push_image(alice, url, "audit/app", images["second"], "v1")  # a push and a tag move
        r = alice.delete("/v2/audit/app/manifests/v1", headers={"X-Request-ID": "audit-delete-tag"})
        assert r.status_code == 202 and r.headers["x-request-id"] == "audit-delete-tag"
        assert alice.delete(f"/v2/audit/app/manifests/{images['first'].digest}").status_code == 202
        assert alice.delete(f"/v2/audit/app/blobs/{images['first'].layers[0].digest}").status_code == 202
        push_image(alice, url, "audit/locked", images["locked"], "v1")
        assert alice.delete("/v2/audit/locked/manifests/v1").status_code == 403  # policy.immutable_tags
        push_image(alice, url, "audit/retained", images["old"], "old")
        push_image(alice, url, "audit/retained", images["new"], "new")
    bob = token(trail.server, "bob", "audit/app")  # may pull only
    assert httpx.post(f"{url}/v2/audit/app/blobs/uploads/", headers=bearer(bob)).status_code == 403
    assert httpx.get(f"{url}/auth/token", auth=("alice", "not-her-password")).status_code == 401

    created = registry("robot", "create", "audit-bot", "--repo", "audit/bot", "--cost", "4",
                       "--config", str(trail.config_path))
    assert created.returncode == 0, created.stderr
    remember_secret(created.stdout.strip(), "robot secret")
    assert trail.server.root is not None
    old_tag = trail.server.root / "v1/repositories/audit/retained/_manifests/tags/old/current/link"
    os.utime(old_tag, (time.time() - 86400,) * 2)  # so keep_last 1 keeps "new"
    retention = registry("retention", "--config", str(trail.config_path))
    assert retention.returncode == 0 and "removed" in retention.stdout, retention.stderr
    gc = registry("gc", "--grace", "0", "--config", str(trail.config_path))
    assert gc.returncode == 0, gc.stderr
    return trail


def test_every_audited_action_leaves_one_entry_with_who_and_from_where(acted: Trail) -> None:
    entries = acted.entries()
    seen = Counter((e["action"], e.get("repository", ""), e.get("tag", ""), e.get("user", ""), e.get("client", ""))
                   for e in entries)
    assert seen == Counter([
        ("manifest.push", "audit/app", "v1", "alice", LOCAL), ("manifest.push", "audit/app", "v1", "alice", LOCAL),
        ("tag.move", "audit/app", "v1", "alice", LOCAL), ("tag.delete", "audit/app", "v1", "alice", LOCAL),
        ("manifest.delete", "audit/app", "", "alice", LOCAL), ("blob.delete", "audit/app", "", "alice", LOCAL),
        ("manifest.push", "audit/locked", "v1", "alice", LOCAL),
        ("delete.refused", "audit/locked", "", "alice", LOCAL), ("push.refused", "audit/app", "", "bob", LOCAL),
        ("login.failed", "", "", "alice", LOCAL), ("robot.create", "", "", "audit-bot", ""),
        ("manifest.push", "audit/retained", "old", "alice", LOCAL),
        ("manifest.push", "audit/retained", "new", "alice", LOCAL),
        ("retention.remove", "audit/retained", "old", "", ""), ("gc.run", "", "", "", ""),
    ])
    by_action = {e["action"]: e for e in entries}
    first, second = acted.images["first"].digest, acted.images["second"].digest
    assert (by_action["tag.move"]["from"], by_action["tag.move"]["to"]) == (first, second)
    assert by_action["tag.delete"]["request_id"] == "audit-delete-tag" and by_action["tag.delete"]["digest"] == second
    assert by_action["manifest.delete"]["digest"] == first
    assert by_action["blob.delete"]["digest"] == acted.images["first"].layers[0].digest
    assert "immutable" in by_action["delete.refused"]["detail"]
    assert by_action["retention.remove"]["digest"] == acted.images["old"].digest
    assert by_action["gc.run"]["figures"]["blobs_removed"] >= 1
    assert "audit/bot" in by_action["robot.create"]["detail"]
    for entry in entries:
        assert entry["time"].endswith("Z") and len(entry["id"]) == 32
        assert ("request_id" in entry) == (entry["action"] not in ("robot.create", "retention.remove", "gc.run"))
    # the same lines in storage, where `registry audit` reads them (oldest first)
    done = registry("audit", "--json", "--config", str(acted.config_path))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    stored = done.stdout.splitlines()
    assert sorted(stored) == sorted(acted.audit_path.read_text().splitlines())
    times = [json.loads(line)["time"] for line in stored]
    assert times == sorted(times)


def test_registry_audit_filters_by_repository_time_action_and_user(acted: Trail) -> None:
    everything = audit(acted)
    assert len(everything) == len(acted.entries()) and audit(acted, "--since", "1h") == everything
    assert audit(acted, "--file", str(acted.audit_path)) == everything
    assert audit(acted, "--file", str(acted.audit_path), "--json") == audit(acted, "--json")
    move = next(line for line in everything if " tag.move " in line)
    first, second = acted.images["first"].digest, acted.images["second"].digest
    assert f"audit/app:v1 {first} -> {second} by alice from {LOCAL} [" in move

    def actions(*args: str) -> list[str]:
        return [json.loads(line)["action"] for line in audit(acted, "--json", *args)]

    assert actions("--repo", "audit/locked") == ["manifest.push", "delete.refused"]
    assert len(actions("--repo", "audit/*")) == len(everything) - 3  # not the login, robot, gc entries
    assert actions("--action", "tag.*", "blob.delete") == ["tag.move", "tag.delete", "blob.delete"]
    assert actions("--user", "bob") == ["push.refused"]
    assert actions("--repo", "audit/app", "--user", "alice", "--action", "manifest.push") == ["manifest.push"] * 2
    entries = acted.entries()
    deleted = next(e for e in entries if e["action"] == "tag.delete")["time"]
    since = actions("--since", deleted)
    assert since[0] == "tag.delete" and len(since) == len([e for e in entries if e["time"] >= deleted])
    assert actions("--until", entries[0]["time"]) == [entries[0]["action"]]
    assert actions("--until", "1h") == []

    for bad, says in ((["--since", "last tuesday"], "--since: 'last tuesday' is neither a duration"),
                      (["--action", "manifest.pull"], "--action: 'manifest.pull' is no audited action"),
                      (["--repo", "Audit/App"], "--repo: repository pattern 'Audit/App' may hold only")):
        status, out, err = audit_command(acted, *bad)
        assert status == 2 and out == "", err
        assert err.startswith(f"registry: {says}") and len(err.splitlines()) == 1


def test_entries_written_a_little_out_of_order_are_read_in_time_order() -> None:
    from registry.audit.query import Found, in_time_order

    written = [10.0, 12.0, 11.0, 400.0, 13.0, 800.0, 790.0]  # as replicas and workers may write them
    read = [item.time for item in in_time_order(Found({}, t, "") for t in written)]
    assert read == sorted(written)


def test_replicas_over_one_store_meet_in_registry_audit(acted: Trail) -> None:
    """A second replica (two worker processes) over the same storage and the same audit file: pushes
    to both at once are all in storage and in the file, whole lines each."""
    replica = start_cargobay(acted.config_path.parent / "replica", config={**acted.config, "http": {"workers": 2}})
    try:
        targets = [(server, f"audit/r-{name}-{i}") for i in range(3)
                   for server, name in ((acted.server, "primary"), (replica, "replica"))]
        alice = bearer(token(acted.server, "alice", *(repo for _, repo in targets)))

        def push(target: tuple[RunningServer, str]) -> None:
            server, repo = target
            with httpx.Client(headers=alice, timeout=30) as c:  # the replicas share the token key
                push_image(c, server.url, repo, simple_image(repo, layer_count=1), "v1")

        with ThreadPoolExecutor(len(targets)) as pool:
            list(pool.map(push, targets))
    finally:
        replica.stop()
    pushed = sorted(repo for _, repo in targets)
    stored = [json.loads(line) for line in audit(acted, "--json", "--repo", "audit/r-*")]
    assert sorted(e["repository"] for e in stored) == pushed and {e["action"] for e in stored} == {"manifest.push"}
    in_file = [e for e in acted.entries() if e.get("repository", "").startswith("audit/r-")]  # every line parses
    assert sorted(e["repository"] for e in in_file) == pushed
    assert all(json.loads(line)["message"] for line in replica.log().splitlines())  # two workers log JSON too


# -- JSON logs -----------------------------------------------------------------------------------
ACCESS_FIELDS = {"request_id", "client", "user", "repository", "action", "method", "path", "route", "status",
                 "bytes_in", "bytes_out", "duration_ms"}


def access_line(server: RunningServer, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The access line of a request (logged once its response is done: it may come a moment after)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in server.log().splitlines():
            record = json.loads(line)
            if record.get("request_id") == request_id and record["logger"] == "cargobay.access":
                return record
        assert time.monotonic() < deadline, f"no access line with request id {request_id}"
        time.sleep(0.05)


def test_json_logs_every_line_and_access_lines_with_request_ids(acted: Trail) -> None:
    server = acted.server
    alice = bearer(token(server, "alice", "audit/app"))
    missing = f"{server.url}/v2/audit/app/manifests/nope"
    traced = httpx.get(missing, headers={**alice, "X-Request-ID": "trace-missing-1"})  # from 127.0.0.1: trusted
    assert traced.status_code == 404 and traced.headers["x-request-id"] == "trace-missing-1"
    insane = httpx.get(missing, headers={**alice, "X-Request-ID": "no spaces; " + "x" * 200})
    assert re.fullmatch("[0-9a-f]{16}", insane.headers["x-request-id"])
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as stranger:  # not a proxy
        untrusted = stranger.get(missing, headers={**alice, "X-Request-ID": "trace-untrusted-1"})
    assert re.fullmatch("[0-9a-f]{16}", untrusted.headers["x-request-id"])

    error = access_line(server, "trace-missing-1")
    assert error["status"] == 404 and error["bytes_out"] == len(traced.content) > 0
    assert {k: error[k] for k in ("client", "user", "repository", "action", "method", "path", "route")} == {
        "client": LOCAL, "user": "alice", "repository": "audit/app", "action": "pull", "method": "GET",
        "path": "/v2/audit/app/manifests/nope", "route": "/v2/{name}/manifests/{reference}"}
    assert access_line(server, untrusted.headers["x-request-id"])["client"] == "127.0.0.2"
    assert access_line(server, insane.headers["x-request-id"])["status"] == 404

    log = server.log()
    assert "trace-untrusted-1" not in log and "no spaces" not in log
    records = [json.loads(line) for line in log.splitlines()]  # every line, uvicorn's included
    for record in records:
        assert {"time", "level", "message"} <= record.keys() and record["time"].endswith("Z"), record
    access = [r for r in records if r["logger"] == "cargobay.access"]
    assert all(r.keys() >= ACCESS_FIELDS for r in access)
    pushes = [r for r in access if (r["method"], r["path"]) == ("PUT", "/v2/audit/app/manifests/v1")]
    sizes = sorted(len(acted.images[name].manifest) for name in ("first", "second"))
    assert sorted(r["bytes_in"] for r in pushes) == sizes
    assert {(r["status"], r["user"], r["action"], r["route"]) for r in pushes} == {
        (201, "alice", "push", "/v2/{name}/manifests/{reference}")}
    assert {r["level"] for r in records} >= {"info", "warning"}  # the failed login is a warning


def test_serve_refuses_an_audit_file_it_cannot_append_to_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    missing = tmp_path / "no-such-dir" / "audit.jsonl"
    config.write_text(json.dumps({"storage": {"filesystem": {"root": str(tmp_path / "data")}},
                                  "audit": {"path": str(missing)}}))
    done = registry("serve", "--config", str(config), "--port", "1")  # refused before it would listen
    assert done.returncode == 2 and done.stderr.splitlines() == [f"registry: No such file or directory: {missing}"]
