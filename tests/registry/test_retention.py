"""Retention on a store of 200 tags with known push times: `registry retention --dry-run` lists
exactly what the rules remove and why, the real run removes exactly that and nothing else (pulls
through a real `registry serve` agree), untagged manifests go unless a kept index lists them or
they refer to a kept manifest, and `registry serve` applies the rules every `retention.interval`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from ocispec.digest import Digest
from storage import Storage
from storage.driver.fs import FilesystemDriver
from tests.support.images import Image, build_image, build_index, make_layer, simple_image
from tests.support.servers import REPO_ROOT, start_cargobay

DAY, HOUR, MINUTE = 86400, 3600, 60
RULES = [
    {"repositories": ["ci/*"], "keep_last": 10, "tags_older_than": "30d", "keep_tags": ["release-*"]},
    {"repositories": ["team/*"], "keep_last": 5},
    {"repositories": ["ci/untagged"], "untagged_older_than": "7d"},
]
IMMUTABLE = ["team/keep:t2?"]


@dataclass
class Fixture:
    root: Path
    config: Path
    tags: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, tag) -> digest
    digests: dict[str, str] = field(default_factory=dict)  # label -> digest of an untagged-test manifest


def _age(root: Path, key: str, seconds: float, now: float) -> None:
    when = now - seconds
    os.utime(root / key, (when, when))


def _push(storage: Storage, repo: str, target: object, tag: str | None = None) -> str:
    blobs = getattr(target, "blobs", list)()
    for blob in blobs:
        status = storage.uploads.start(repo)
        storage.uploads.append(repo, status.id, [blob.data])
        storage.uploads.complete(repo, status.id, Digest.parse(blob.digest))
    manifest, media_type = target.manifest, target.media_type  # type: ignore[attr-defined]
    return str(storage.repository(repo).manifests.put(manifest, media_type, tags=(tag,) if tag else ()).digest)


def _tag_key(repo: str, tag: str) -> str:
    return f"v1/repositories/{repo}/_manifests/tags/{tag}/current/link"


def _revision_key(repo: str, digest: str) -> str:
    return f"v1/repositories/{repo}/_manifests/revisions/sha256/{digest[7:]}/link"


@pytest.fixture
def store(tmp_path: Path) -> Fixture:
    root = tmp_path / "data"
    storage = Storage(FilesystemDriver(root))
    now = time.time()
    config = tmp_path / "retention.yaml"
    config.write_text(yaml.safe_dump({"storage": {"filesystem": {"root": str(root)}},
                                      "retention": {"rules": RULES}, "policy": {"immutable_tags": IMMUTABLE}}))
    fixture = Fixture(root, config)
    images = [simple_image(f"retention-{i}", layer_count=1) for i in range(12)]

    def tag(repo: str, name: str, image: Image, age: float) -> None:
        fixture.tags[(repo, name)] = _push(storage, repo, image, name)
        _age(root, _tag_key(repo, name), age, now)

    for i in range(120):  # ci-000 pushed 12 h ago, ci-119 119.5 days ago
        tag("ci/app", f"ci-{i:03d}", images[i % 12], i * DAY + 12 * HOUR)
    for i in range(5):
        tag("ci/app", f"release-{i}", images[i], 100 * DAY)
    for i in range(40):  # all within 30 days: beyond the last 10 but kept
        tag("ci/tool", f"t-{i:02d}", images[i % 12], i * HOUR + MINUTE)
    for i in range(30):
        tag("team/keep", f"t{i}", images[i % 12], i * MINUTE + 30)
    for i in range(3):
        tag("other/x", f"v{i}", images[i], 400 * DAY)

    # Untagged manifests in ci/untagged, by label.
    repo = "ci/untagged"
    a, b, c, d, o, y = (simple_image(f"untagged-{n}", layer_count=1) for n in "abcdoy")
    for label, image in (("a", a), ("b", b), ("c", c), ("d", d), ("o", o), ("y", y)):
        fixture.digests[label] = _push(storage, repo, image)
    multi = build_index([a, b])
    fixture.digests["multi"] = _push(storage, repo, multi, "multi")
    fixture.tags[(repo, "multi")] = fixture.digests["multi"]
    storage.repository(repo).tags.set("signed", Digest.parse(fixture.digests["c"]))
    fixture.tags[(repo, "signed")] = fixture.digests["c"]
    signature = make_layer([("sig", b"signature of c")])
    for label, subject in (("sig-c", c), ("sig-o", o)):
        fixture.digests[label] = _push(storage, repo, build_image(
            [signature], subject=subject.descriptor(), artifact_type="application/vnd.example.signature"))
    fixture.digests["old-index"] = _push(storage, repo, build_index([d]))
    for label, digest in fixture.digests.items():
        if label not in ("multi", "y"):
            _age(root, _revision_key(repo, digest), 20 * DAY, now)
    _age(root, _revision_key(repo, fixture.digests["y"]), 2 * DAY, now)
    assert len(fixture.tags) == 200
    return fixture


def _expected_tags() -> set[tuple[str, str]]:
    ci = {("ci/app", f"ci-{i:03d}") for i in range(30, 120)}  # beyond the 10 newest and older than 30 days
    team = {("team/keep", f"t{i}") for i in range(5, 20)}  # beyond the 5 newest, t2? immutable
    return ci | team


def _retention(fixture: Fixture, *extra: str) -> list[str]:
    command = [str(Path(sys.executable).parent / "registry"), "retention", "--config", str(fixture.config)]
    done = subprocess.run([*command, *extra], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.splitlines()


def test_dry_run_lists_exactly_what_the_real_run_removes(store: Fixture) -> None:
    untagged_gone = {store.digests[label] for label in ("o", "sig-o", "old-index", "d")}
    dry = _retention(store, "--dry-run")
    tag_lines = {line for line in dry if line.startswith("would remove tag ")}
    assert {tuple(line.split(" ")[3].rstrip(":").split(":")) for line in tag_lines} == _expected_tags()
    untagged_lines = [line for line in dry if line.startswith("would remove untagged ")]
    assert {line.split("@")[1].split(":", 2)[0] + ":" + line.split("@")[1].split(":", 2)[1]
            for line in untagged_lines} == untagged_gone
    assert ("would remove tag ci/app:ci-031: beyond the 10 most recently pushed and pushed 31d ago "
            "(rule 0: keep_last 10, tags_older_than 30d)") in dry
    assert "would remove tag team/keep:t5: beyond the 5 most recently pushed (rule 1: keep_last 5)" in dry
    assert dry[-1] == "would remove 105 tags and 4 untagged manifests in 3 repositories (their blobs go at the next gc)"
    storage = Storage(FilesystemDriver(store.root))
    assert storage.repository("ci/app").tags.resolve("ci-119")  # a dry run removes nothing

    real = _retention(store)
    assert [line.replace("would remove", "removed", 1) for line in dry] == real

    server = start_cargobay(store.root.parent / "serve", root=store.root)
    try:
        with httpx.Client(base_url=server.url) as client:
            for (repo, tag), digest in store.tags.items():
                answer = client.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": "*/*"})
                if (repo, tag) in _expected_tags():
                    assert answer.status_code == 404, (repo, tag)
                else:
                    assert answer.status_code == 200 and answer.headers["Docker-Content-Digest"] == digest, (repo, tag)
            for label, digest in store.digests.items():
                status = client.head(f"/v2/ci/untagged/manifests/{digest}", headers={"Accept": "*/*"}).status_code
                assert status == (404 if digest in untagged_gone else 200), label
    finally:
        server.stop()
    assert _retention(store, "--dry-run")[-1].startswith("would remove 0 tags and 0 untagged manifests")


def test_serve_applies_the_rules_every_retention_interval(tmp_path: Path) -> None:
    root = tmp_path / "data"
    storage = Storage(FilesystemDriver(root))
    image = simple_image("retention-serve", layer_count=1)
    for name in ("old", "new"):
        _push(storage, "ci/served", image, name)
    _age(root, _tag_key("ci/served", "old"), 40 * DAY, time.time())
    server = start_cargobay(tmp_path, config={
        "storage": {"filesystem": {"root": str(root)}},
        "retention": {"interval": "1s", "rules": [{"repositories": ["ci/*"], "tags_older_than": "30d"}]}})
    try:
        with httpx.Client(base_url=server.url) as client:
            deadline = time.monotonic() + 60
            while client.head("/v2/ci/served/manifests/old", headers={"Accept": "*/*"}).status_code == 200:
                assert time.monotonic() < deadline, "registry serve never applied the retention rules"
                time.sleep(0.5)
            assert client.head("/v2/ci/served/manifests/new", headers={"Accept": "*/*"}).status_code == 200
        assert "retention removed tag ci/served:old" in server.log_path.read_text()
    finally:
        server.stop()
