"""What a pull-through cache needs of storage, on every driver (fs, s3-moto, s3-seaweedfs):
verified blob fills, manifests stored before their blobs, pull times on links, and garbage
collection that expires cached content nobody pulled while keeping local repositories whole.

Pull times are link mtimes, which some S3 servers keep in whole seconds: the two tests that need a
later write than an earlier one wait just over a second between them (they assert the order of
what storage recorded, never how long anything took). The last test runs `registry gc` on a
filesystem root: its expiry comes from the `proxy` settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocispec.digest import Digest
from storage import (
    CACHED_MANIFEST_RULES,
    BlobUnknown,
    DigestInvalid,
    ExpiringRepositories,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    Repository,
    SizeInvalid,
    Storage,
    TagUnknown,
    UploadInvalid,
    collect,
    paths,
)
from storage.driver.base import StorageDriver
from storage.driver.fs import FilesystemDriver
from tests.support.images import Blob, Image, build_image, make_layer, simple_image
from tests.support.servers import REPO_ROOT

from .test_stores import push_blob, push_image

MiB = 1024 * 1024
#: Past the S3 test part size (5 MiB, conftest), so a fill there is a multipart upload.
BIG = 7 * MiB + 123
#: Later than any link mtime two writes a second apart can get, on every driver.
NEXT_SECOND = 1.1


def fill_blob(repository: Repository, data: bytes, chunk: int = MiB) -> Digest:
    digest = Digest.of(data)
    fill = repository.blobs.fill(digest, len(data))
    for start in range(0, len(data), chunk):
        fill.write(data[start:start + chunk])
    assert fill.commit().size == len(data)
    return digest


def nothing_of(storage: Storage, name: str, *digests: Digest) -> None:
    """Neither a CAS entry, nor a link in `name`, nor an upload left behind for any of `digests`."""
    repository = storage.repository(name)
    for digest in digests:
        assert not storage.blobs.exists(digest)
        assert not repository.blobs.has(digest)
        with pytest.raises(BlobUnknown):
            repository.blobs.open(digest)
    assert not list(storage.driver.walk(paths.uploads(name)))


def test_a_filled_blob_is_served_by_its_repository_only(driver: StorageDriver,
                                                        driver_replica: StorageDriver) -> None:
    storage = Storage(driver)
    cache = storage.repository("up.test/library/big")
    data = os.urandom(BIG)
    digest = Digest.of(data)
    fill = cache.blobs.fill(digest, len(data))
    for start in range(0, len(data), MiB):
        fill.write(data[start:start + MiB])
    assert fill.offset == len(data)
    # Every byte written, none verified: nothing is visible yet.
    assert not storage.blobs.exists(digest) and not cache.blobs.has(digest)
    assert fill.commit().size == len(data)
    fill.abort()  # after a commit: nothing to do, and nothing undone

    # Served here, from any replica; not through a repository that does not link it.
    for store in (storage, Storage(driver_replica)):
        with store.repository("up.test/library/big").blobs.open(digest, 10) as stream:
            assert stream.read() == data[10:]
        with pytest.raises(BlobUnknown):
            store.repository("up.test/library/other").blobs.stat(digest)
    assert not list(driver.walk(paths.uploads(cache.name)))


def test_a_fill_with_the_wrong_bytes_stores_nothing(driver: StorageDriver) -> None:
    storage = Storage(driver)
    name = "up.test/library/bad"
    blobs = storage.repository(name).blobs
    actual = os.urandom(64 * 1024)
    claimed = Digest.of(b"what the manifest promised")

    wrong_digest = blobs.fill(claimed, len(actual))
    wrong_digest.write(actual)
    with pytest.raises(DigestInvalid):
        wrong_digest.commit()
    wrong_digest.abort()  # after a failed commit: quiet, and still nothing there
    nothing_of(storage, name, claimed, Digest.of(actual))

    short = blobs.fill(Digest.of(actual), len(actual) + 1)
    short.write(actual)
    with pytest.raises(SizeInvalid):
        short.commit()
    short.abort()
    nothing_of(storage, name, Digest.of(actual))

    # More than the size announced is refused at the write that exceeds it.
    long = blobs.fill(Digest.of(actual[:100]), 100)
    long.write(actual[:60])
    with pytest.raises(SizeInvalid):
        long.write(actual[60:120])
    assert long.offset == 60
    long.abort()
    nothing_of(storage, name, Digest.of(actual[:100]))


def test_a_fill_reset_midway_starts_over(driver: StorageDriver) -> None:
    storage = Storage(driver)
    name = "up.test/library/reset"
    data = os.urandom(BIG)
    digest = Digest.of(data)
    fill = storage.repository(name).blobs.fill(digest, len(data))
    fill.write(os.urandom(6 * MiB))  # a source that broke off with the wrong bytes so far
    fill.reset()
    assert fill.offset == 0
    for start in range(0, len(data), 3 * MiB):
        fill.write(data[start:start + 3 * MiB])
    fill.commit()
    with storage.repository(name).blobs.open(digest) as stream:
        assert stream.read() == data
    assert not list(driver.walk(paths.uploads(name)))

    # A commit that found the wrong bytes can start over too (another source).
    other = os.urandom(1000)
    retried = storage.repository(name).blobs.fill(Digest.of(other), len(other))
    retried.write(os.urandom(1000))
    with pytest.raises(DigestInvalid):
        retried.commit()
    retried.reset()
    retried.write(other)
    assert retried.commit().digest == Digest.of(other)
    assert storage.repository(name).blobs.stat(Digest.of(other)).size == len(other)


def test_an_aborted_fill_leaves_nothing(driver: StorageDriver) -> None:
    storage = Storage(driver)
    name = "up.test/library/aborted"
    data = os.urandom(BIG)
    digest = Digest.of(data)
    fill = storage.repository(name).blobs.fill(digest, len(data))
    fill.write(data[:6 * MiB])
    fill.abort()
    fill.abort()
    with pytest.raises(UploadInvalid):
        fill.write(data[6 * MiB:])
    with pytest.raises(UploadInvalid):
        fill.commit()
    nothing_of(storage, name, digest)

    # As a context manager: an error inside aborts it.
    with pytest.raises(RuntimeError), storage.repository(name).blobs.fill(digest, len(data)) as scoped:
        scoped.write(data[:MiB])
        raise RuntimeError("the client went away")
    nothing_of(storage, name, digest)


def test_exists_is_what_the_catalog_lists(driver: StorageDriver) -> None:
    storage = Storage(driver)
    repository = storage.repository("local/exists")
    assert not repository.exists()
    image = simple_image("exists")
    push_blob(storage, repository.name, image.config.data)  # blobs alone make no repository
    assert not repository.exists()
    assert repository.name not in storage.repositories()
    push_image(storage, repository.name, image)
    assert repository.exists()
    assert repository.name in storage.repositories()
    assert not storage.repository("local").exists()  # a parent of a repository is none itself


def test_a_cached_manifest_is_stored_before_its_blobs(driver: StorageDriver, driver_replica: StorageDriver) -> None:
    storage = Storage(driver)
    image = simple_image("cached")
    config, first, second = image.blobs()
    cache = storage.repository("up.test/library/cached")
    with pytest.raises(ManifestBlobUnknown):  # a push is still checked in full
        cache.manifests.put(image.manifest, image.media_type)

    # The config is here already (its link is rewritten), the first layer only in another repository's.
    push_blob(storage, cache.name, config.data)
    push_blob(storage, "local/elsewhere", first.data)
    digest = cache.manifests.put(image.manifest, image.media_type, tags=("7",), rules=CACHED_MANIFEST_RULES).digest
    assert cache.manifests.get(digest).raw == image.manifest
    assert cache.tags.resolve("7") == digest
    assert cache.blobs.stat(Digest.parse(config.digest)).size == config.size
    for absent in (first, second):  # named by the manifest, yet not served: never linked
        assert not cache.blobs.has(Digest.parse(absent.digest))
        with pytest.raises(BlobUnknown):
            cache.blobs.open(Digest.parse(absent.digest))

    # Later: the CAS has the first layer (adopted, not fetched again); the second is filled.
    assert cache.blobs.adopt_existing(Digest.parse(first.digest))
    assert not cache.blobs.adopt_existing(Digest.parse(second.digest))
    assert not cache.blobs.has(Digest.parse(second.digest))
    fill_blob(cache, second.data)
    replica = Storage(driver_replica).repository(cache.name)
    assert replica.manifests.get(replica.tags.resolve("7")).raw == image.manifest
    for blob in image.blobs():
        with replica.blobs.open(Digest.parse(blob.digest)) as stream:
            assert stream.read() == blob.data


def test_cached_rules_still_check_the_size_of_present_blobs(driver: StorageDriver) -> None:
    storage = Storage(driver)
    image = simple_image("sizes")
    config = image.config
    cache = storage.repository("up.test/library/sizes")
    push_blob(storage, cache.name, config.data)
    # The config descriptor comes first in the canonical JSON: it now claims one byte more.
    tampered = image.manifest.replace(f'"size":{config.size}'.encode(), f'"size":{config.size + 1}'.encode(), 1)
    with pytest.raises(ManifestInvalid):
        cache.manifests.put(tampered, image.media_type, rules=CACHED_MANIFEST_RULES)
    assert cache.manifests.revisions() == []
    assert not cache.exists()


def test_tags_manifests_and_blobs_record_when_they_were_last_written(driver: StorageDriver) -> None:
    storage = Storage(driver)
    cache = storage.repository("up.test/library/times")
    one, two = simple_image("times-1"), simple_image("times-2")
    first = push_image(storage, cache.name, one, "latest")
    second = push_image(storage, cache.name, two)
    layer = Digest.parse(one.layers[0].digest)
    with pytest.raises(TagUnknown):
        cache.tags.stat("missing")
    before = cache.tags.stat("latest")
    assert before.digest == first
    manifest_before = cache.manifests.pulled_at(first)
    layer_before = driver.stat(paths.layer_link(cache.name, layer)).modified
    time.sleep(NEXT_SECOND)

    cache.tags.set("latest", first)  # confirmed unchanged upstream: the same digest, set again
    cache.manifests.touch(first)
    cache.blobs.touch(layer)
    after = cache.tags.stat("latest")
    assert after.digest == first and after.updated > before.updated
    assert cache.manifests.pulled_at(first) > manifest_before
    assert driver.stat(paths.layer_link(cache.name, layer)).modified > layer_before
    cache.tags.set("latest", second)
    assert cache.tags.stat("latest").digest == second

    # A touch never creates: an unknown manifest or blob stays unknown.
    unknown = Digest.of(b"never pushed")
    with pytest.raises(ManifestUnknown):
        cache.manifests.touch(unknown)
    with pytest.raises(ManifestUnknown):
        cache.manifests.pulled_at(unknown)
    assert not cache.manifests.exists(unknown)
    elsewhere = push_blob(storage, "local/not-the-cache", b"linked elsewhere")
    with pytest.raises(BlobUnknown):
        cache.blobs.touch(elsewhere)
    assert not cache.blobs.has(elsewhere)
    # A tag whose revision is gone (a racing delete) does not resolve, so it has no stat either.
    driver.delete(paths.manifest_revision(cache.name, second))
    with pytest.raises(TagUnknown):
        cache.tags.stat("latest")


def cache_image(storage: Storage, name: str, image: Image, tag: str) -> Digest:
    """What the cache does on a miss: the manifest first, then each blob as it is pulled."""
    repository = storage.repository(name)
    digest = repository.manifests.put(image.manifest, image.media_type, tags=(tag,), rules=CACHED_MANIFEST_RULES).digest
    for blob in image.blobs():
        if not repository.blobs.adopt_existing(Digest.parse(blob.digest)):
            fill_blob(repository, blob.data)
    return digest


def digests(*blobs: Blob) -> set[Digest]:
    return {Digest.parse(blob.digest) for blob in blobs}


def test_gc_expires_cached_content_nobody_pulled(driver: StorageDriver) -> None:
    storage = Storage(driver)
    keep_for = 30 * 86400.0
    shared = make_layer([("shared.txt", b"in a local image and in a cached one")])
    local_image = build_image([shared, make_layer([("local.txt", b"local only")])])
    old_image = build_image([shared, make_layer([("old.txt", b"cached, not pulled since")]),
                             make_layer([("pulled.txt", b"cached, its layer pulled lately")])])
    fresh_image = simple_image("fresh")
    outside_image = simple_image("outside")
    push_image(storage, "team/app", local_image, "v1")
    push_image(storage, "up.testx/app", outside_image, "v1")  # only a name like the upstream's
    old = cache_image(storage, "up.test/library/old", old_image, "1")
    fresh = cache_image(storage, "up.test/library/fresh", fresh_image, "2")
    time.sleep(NEXT_SECOND)
    storage.repository("up.test/library/fresh").manifests.touch(fresh)
    for blob in fresh_image.blobs():
        storage.repository("up.test/library/fresh").blobs.touch(Digest.parse(blob.digest))
    pulled_layer = Digest.parse(old_image.layers[2].digest)
    storage.repository("up.test/library/old").blobs.touch(pulled_layer)  # a layer pulled, not its manifest
    # The moment keep_for has passed since the old revision's last pull, not since the fresh one's.
    now = storage.repository("up.test/library/fresh").manifests.pulled_at(fresh) + keep_for
    assert storage.repository("up.test/library/old").manifests.pulled_at(old) < now - keep_for
    expiring = ExpiringRepositories(("up.test",), keep_for)
    gone = digests(old_image.config, old_image.layers[1]) | {old}

    never = collect(storage, grace_seconds=0, now=now, expiring=ExpiringRepositories(("up.test",), 0))
    assert never.expired_manifests == 0 and never.swept == []

    dry = collect(storage, grace_seconds=0, dry_run=True, now=now, expiring=expiring)
    assert dry.expired_manifests == 1
    assert set(dry.swept) == gone
    old_repository = storage.repository("up.test/library/old")
    assert old_repository.manifests.get(old_repository.tags.resolve("1")).raw == old_image.manifest
    for digest in gone:
        assert storage.blobs.exists(digest)

    report = collect(storage, grace_seconds=0, now=now, expiring=expiring)
    assert report.expired_manifests == 1
    assert set(report.swept) == gone
    with pytest.raises(TagUnknown):
        old_repository.tags.resolve("1")
    with pytest.raises(ManifestUnknown):
        old_repository.manifests.get(old)
    for digest in gone - {old}:
        assert not storage.blobs.exists(digest) and not old_repository.blobs.has(digest)
    # The layer pulled within keep_for stays, and is still served where it was.
    with old_repository.blobs.open(pulled_layer) as stream:
        assert stream.read() == old_image.layers[2].data
    # The fresh revision, every local repository and names outside the prefix keep everything.
    for name, image, tag in (("up.test/library/fresh", fresh_image, "2"), ("team/app", local_image, "v1"),
                             ("up.testx/app", outside_image, "v1")):
        repository = storage.repository(name)
        assert repository.manifests.get(repository.tags.resolve(tag)).raw == image.manifest
        for blob in image.blobs():
            assert repository.blobs.stat(Digest.parse(blob.digest)).size == blob.size


def test_registry_gc_expires_what_the_configured_upstreams_cached(tmp_path: Path) -> None:
    """`registry gc` takes the expiring repositories from `proxy` (its upstreams' hosts, keep_for)."""
    root = tmp_path / "store"
    storage = Storage(FilesystemDriver(root))
    local_image, cached_image = simple_image("cli-local"), simple_image("cli-cached")
    push_image(storage, "team/app", local_image, "v1")
    cached = cache_image(storage, "up.test/library/app", cached_image, "1")
    two_days_ago = time.time() - 2 * 86400
    for path in root.rglob("*"):  # everything last written (pulled) two days ago
        os.utime(path, (two_days_ago, two_days_ago))
    config = tmp_path / "registry.yaml"
    config.write_text("proxy:\n  keep_for: 1d\n  upstreams:\n    - host: up.test\n")

    def gc(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "registry", "gc", "--root", str(root), "--config", str(config),
                               "--grace", "0", *extra], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)

    dry = gc("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 1 cached manifests" in dry.stdout
    assert storage.repository("up.test/library/app").manifests.exists(cached)
    done = gc()
    assert done.returncode == 0, done.stderr
    assert "removed 1 cached manifests" in done.stdout
    assert f"{len(cached_image.blobs()) + 1} blobs" in done.stdout  # its config, layers and manifest
    with pytest.raises(TagUnknown):
        storage.repository("up.test/library/app").tags.resolve("1")
    local = storage.repository("team/app")
    assert local.manifests.get(local.tags.resolve("v1")).raw == local_image.manifest
    for blob in local_image.blobs():
        assert local.blobs.stat(Digest.parse(blob.digest)).size == blob.size


def test_a_fill_tells_whether_its_bytes_are_the_blob_before_storing_them(driver: StorageDriver) -> None:
    data = os.urandom(300_000)
    digest = Digest.of(data)
    repo = Storage(driver).repository("up.test/matches")
    fill = repo.blobs.fill(digest, len(data))
    fill.write(data[:1000])
    assert not fill.matches()  # not all there yet
    fill.write(data[1000:])
    assert fill.matches()
    assert not repo.blobs.has(digest)  # telling stores nothing
    fill.commit()
    assert repo.blobs.open(digest).read() == data
    wrong = repo.blobs.fill(Digest.of(b"something else"), len(data))
    wrong.write(data)
    assert not wrong.matches()
    wrong.abort()
