"""Garbage collection under load: clients push and delete while GC runs every 2 s, and nothing a
push that succeeded refers to may go.

Two variants: two replicas over one SeaweedFS bucket (60 s) and one server on disk (30 s). Four
client threads push images from one small pool (shared base layers, so the same blob and manifest
bytes come back again and again, already in the CAS with an old mtime), through either replica
(blobs through one, the manifest through the other, sometimes): tags that move between digests,
indexes, the old digest deleted after a tag moved, tags deleted, and every few rounds a new
repository whose predecessor is emptied (the run that found a swept manifest did just that).
Beside them `registry gc --grace 2s` runs in a loop, and the servers also collect on their own
schedule (`gc.interval`/`gc.grace`, 2 s).

After a last collection: every tag a client last pushed (201) pulls back from either replica with
its manifest's bytes and every blob checked by sha256, and no stored manifest names a blob that is
missing (in the CAS or as its repository's link) or a child manifest its repository lacks.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ocispec.digest import Digest
from storage import Storage, driver_options, open_storage
from tests.support.images import (
    Image,
    Index,
    build_image,
    build_index,
    make_layer,
    push_blob,
    push_manifest,
    sha256,
)
from tests.support.s3replicas import logs, s3_config, s3_env, start_replicas, stop_all
from tests.support.s3servers import S3Server
from tests.support.servers import REPO_ROOT, RunningServer, start_cargobay

from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures

GRACE = 2.0
GC_EVERY = 2.0
CLIENTS = 4
POOL = 40  # images in the shared pool: few enough that bytes come back while old and unreferenced
SERVER_GC = {"interval": f"{GC_EVERY:g}s", "grace": f"{GRACE:g}s"}

# -- the shared image pool -------------------------------------------------------------------------
BASES = [make_layer([(f"base/{i}.bin", random.Random(f"base-{i}").randbytes(4096))]) for i in range(3)]


def pool_image(k: int, platform: str = "linux/amd64") -> Image:
    app = make_layer([(f"app/{k}.txt", f"app {k}".encode() * 64)])
    return build_image([BASES[k % len(BASES)], app], platform)


def pool_index(k: int) -> Index:
    return build_index([pool_image(k), pool_image(k + 1, "linux/arm64")])


# -- the clients -----------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What the clients saw: the tags they expect, and what went wrong."""

    expected: dict[tuple[str, str], Image | Index] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)  # 5xx or a broken connection: always a failure
    fast_refusals: list[str] = field(default_factory=list)  # a push refused although it took < GRACE
    slow_refusals: int = 0
    pushes: int = 0
    deletes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, what: str, exc: Exception, started: float | None = None) -> None:
        """A failed request; `started`: when the push it belongs to started (None: not a push)."""
        with self.lock:
            if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500 and started is not None:
                if time.monotonic() - started < GRACE:
                    self.fast_refusals.append(f"{what}: {exc.response.status_code} {exc.response.text[:300]}")
                else:
                    self.slow_refusals += 1
            else:
                self.server_errors.append(f"{what}: {exc!r}"[:400])


class Client:
    def __init__(self, number: int, urls: list[str], outcome: Outcome) -> None:
        self.number, self.urls, self.outcome = number, urls, outcome
        self.rng = random.Random(number)
        self.http = httpx.Client(timeout=60)
        self.app = f"stress/c{number}/app"
        self.generation = 0
        self.tags: dict[tuple[str, str], Image | Index] = {}  # this client's own expectations

    def url(self) -> str:
        return self.rng.choice(self.urls)

    def push(self, repo: str, tag: str, target: Image | Index) -> bool:
        """Blobs through one replica, the manifest through one chosen again; True on a 201."""
        started = time.monotonic()
        images = target.images if isinstance(target, Index) else (target,)
        try:
            for image in images:
                blob_url = self.url()
                for blob in image.blobs():
                    push_blob(self.http, blob_url, repo, blob)
                if isinstance(target, Index):
                    push_manifest(self.http, self.url(), repo, image.digest, image.manifest, image.media_type)
            push_manifest(self.http, self.url(), repo, tag, target.manifest, target.media_type)
        except (httpx.HTTPError, OSError) as exc:
            self.outcome.record(f"push {repo}:{tag} ({target.digest})", exc, started)
            return False
        with self.outcome.lock:
            self.outcome.pushes += 1
        self.tags[(repo, tag)] = target
        return True

    def delete(self, repo: str, reference: str) -> bool:
        try:
            r = self.http.delete(f"{self.url()}/v2/{repo}/manifests/{reference}")
            if r.status_code >= 500:
                r.raise_for_status()
        except (httpx.HTTPError, OSError) as exc:
            self.outcome.record(f"delete {repo}@{reference}", exc)
            return False
        if r.status_code != 202:
            return False
        with self.outcome.lock:
            self.outcome.deletes += 1
        if reference.startswith("sha256:"):  # the revision goes, and every tag on it
            self.tags = {key: t for key, t in self.tags.items() if key[0] != repo or t.digest != reference}
        else:
            self.tags.pop((repo, reference), None)
        return True

    def named(self, repo: str, digest: str) -> bool:
        """Whether a tag of `repo` this client expects names `digest`, directly or as an index's child."""
        for (name, _), target in self.tags.items():
            children = target.images if isinstance(target, Index) else ()
            if name == repo and digest in {target.digest, *(child.digest for child in children)}:
                return True
        return False

    def move(self, repo: str, tag: str, target: Image | Index) -> None:
        """Move `tag` to `target`; the digest it left, if no other tag here names it, is deleted
        (an image often, an index always: an untagged index would keep naming children that this
        client deletes once no tag names them, a dangling reference of the client's own making)."""
        old = self.tags.get((repo, tag))
        moved = self.push(repo, tag, target) and old is not None and old.digest != target.digest
        if moved and old is not None and not self.named(repo, old.digest) and (
                isinstance(old, Index) or self.rng.random() < 0.7):
            self.delete(repo, old.digest)

    def round(self) -> None:
        choice = self.rng.random()
        k = self.rng.randrange(POOL)
        if choice < 0.35:
            self.move(self.app, "latest", pool_image(k))
        elif choice < 0.5:
            self.move(self.app, "multi", pool_index(k))
        elif choice < 0.65:
            self.push(self.app, "stable", pool_image(k))
            if self.rng.random() < 0.5:
                self.delete(self.app, "stable")
        else:  # a new repository; the previous one loses its manifests
            previous = f"stress/c{self.number}/g{self.generation}"
            self.generation += 1
            self.push(f"stress/c{self.number}/g{self.generation}", "v1", pool_image(k))
            for digest in {t.digest for key, t in self.tags.items() if key[0] == previous}:
                self.delete(previous, digest)

    def run(self, until: float) -> None:
        with self.http:
            while time.monotonic() < until:
                self.round()
        with self.outcome.lock:
            self.outcome.expected.update(self.tags)


# -- GC beside the servers -------------------------------------------------------------------------
def registry_gc(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # --wait: the servers collect on their own schedule too, and one collector sweeps at a time.
    return subprocess.run([sys.executable, "-m", "registry", "gc", "--config", str(config), "--grace", f"{GRACE:g}s",
                           "--wait"],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)


class GcLoop(threading.Thread):
    """`registry gc --grace 2s --wait` every 2 s until stopped; every run that failed is kept."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.config, self.env = config, env
        self.stopping = threading.Event()
        self.runs = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            done = registry_gc(self.config, self.env)
            self.runs += 1
            if done.returncode != 0:
                self.failures.append(f"exit {done.returncode}: {(done.stdout + done.stderr)[-800:]}")
            self.stopping.wait(GC_EVERY)


def gc_env(extra: dict[str, str]) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **extra}


# -- checks ----------------------------------------------------------------------------------------
def pull_and_check(http: httpx.Client, url: str, repo: str, reference: str, expected: Image | Index) -> list[str]:
    """What is wrong with `repo:reference` as served by `url` (nothing: an empty list)."""
    accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
    r = http.get(f"{url}/v2/{repo}/manifests/{reference}", headers={"Accept": accept})
    if r.status_code != 200:
        return [f"{url} {repo}:{reference} (expected {expected.digest}): manifest {r.status_code} {r.text[:200]}"]
    if sha256(r.content) != expected.digest:
        return [f"{url} {repo}:{reference}: manifest {sha256(r.content)}, expected {expected.digest}"]
    problems: list[str] = []
    for image in expected.images if isinstance(expected, Index) else ():
        problems += pull_and_check(http, url, repo, image.digest, image)
    for blob in expected.blobs() if isinstance(expected, Image) else ():
        got = http.get(f"{url}/v2/{repo}/blobs/{blob.digest}", follow_redirects=True)
        if got.status_code != 200 or sha256(got.content) != blob.digest:
            problems.append(f"{url} {repo}:{reference}: blob {blob.digest} {got.status_code} "
                            f"({len(got.content)} bytes, {sha256(got.content)})")
    return problems


def dangling_references(storage: Storage) -> list[str]:
    """Every stored manifest that names a blob or child manifest its repository cannot serve."""
    problems: list[str] = []
    for name in storage.all_repository_dirs():
        repo = storage.repository(name)
        for digest in repo.manifests.revisions():
            try:
                raw = repo.manifests.get(digest).raw
            except Exception as exc:  # the revision link is there, its bytes are not
                problems.append(f"{name}@{digest}: revision without its manifest ({exc})")
                continue
            body: dict[str, Any] = json.loads(raw)
            for d in [body.get("config") or {}, *body.get("layers", [])]:
                blob = Digest.parse(d["digest"]) if d else None
                if blob is not None and not (repo.blobs.has(blob) and storage.blobs.exists(blob)):
                    problems.append(f"{name}@{digest}: blob {d['digest']} missing")
            for d in body.get("manifests", []):
                if not repo.manifests.exists(Digest.parse(d["digest"])):
                    problems.append(f"{name}@{digest}: child manifest {d['digest']} missing")
    return problems


def stress(urls: list[str], seconds: float, config: Path, env: dict[str, str], storage: Storage) -> None:
    outcome = Outcome()
    gc = GcLoop(config, env)
    gc.start()
    until = time.monotonic() + seconds
    clients = [threading.Thread(target=Client(i, urls, outcome).run, args=(until,)) for i in range(CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    gc.stopping.set()
    gc.join()
    time.sleep(GRACE + 0.5)  # everything pushed is now older than the grace period: one more collection
    last = registry_gc(config, env)
    assert last.returncode == 0, last.stdout + last.stderr

    summary = (f"{outcome.pushes} pushes, {outcome.deletes} deletes, {gc.runs} gc runs, "
               f"{outcome.slow_refusals} pushes slower than the grace period refused")
    # The load must have been real: on 2 cores over SeaweedFS a collection takes several seconds.
    assert outcome.pushes >= 50 and gc.runs >= 3, summary
    assert not outcome.server_errors, f"{summary}; server errors:\n" + "\n".join(outcome.server_errors[:20])
    assert not outcome.fast_refusals, (f"{summary}; pushes refused within the grace period:\n"
                                       + "\n".join(outcome.fast_refusals[:20]))
    assert not gc.failures, f"{summary}; registry gc failed:\n" + "\n".join(gc.failures[:5])
    problems: list[str] = []
    with httpx.Client(timeout=60) as http:
        for i, ((repo, tag), target) in enumerate(sorted(outcome.expected.items(), key=lambda kv: kv[0])):
            problems += pull_and_check(http, urls[i % len(urls)], repo, tag, target)
    assert not problems, (f"{summary}; {len(problems)} tags pushed with 201 do not pull back:\n"
                          + "\n".join(problems[:30]))
    dangling = dangling_references(storage)
    assert not dangling, f"{summary}; manifests naming what is gone:\n" + "\n".join(dangling[:30])


# -- the two variants ------------------------------------------------------------------------------
@pytest.fixture
def s3_replicas(tmp_path: Path, seaweedfs: S3Server, s3_bucket: str  # noqa: F811
                ) -> Iterator[list[RunningServer]]:
    servers = start_replicas(tmp_path, seaweedfs, s3_bucket, 2, config={"gc": SERVER_GC})
    yield servers
    stop_all(servers)


def test_gc_every_2s_through_two_replicas_over_seaweedfs_loses_nothing_pushed(
        s3_replicas: list[RunningServer], seaweedfs: S3Server, s3_bucket: str, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "gc.yaml"
    config.write_text(yaml.safe_dump(s3_config(seaweedfs, s3_bucket)))
    storage = open_storage(driver_options("s3", seaweedfs.driver_options(s3_bucket)))
    try:
        stress([s.url for s in s3_replicas], 60, config, gc_env(s3_env(seaweedfs)), storage)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(s3_replicas, 2000)}") from None


def test_gc_every_2s_beside_a_server_on_disk_loses_nothing_pushed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    settings = {"storage": {"filesystem": {"root": str(root)}, "delete": {"enabled": True}}, "gc": SERVER_GC}
    server = start_cargobay(tmp_path / "server", config=settings)
    config = tmp_path / "gc.yaml"
    config.write_text(yaml.safe_dump(settings))
    try:
        stress([server.url], 30, config, gc_env({}), open_storage(driver_options("filesystem", {"root": str(root)})))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{server.log()[-2000:]}") from None
    finally:
        server.stop()
