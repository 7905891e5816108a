"""The content-addressed stores, run unchanged on every driver (see conftest: fs, s3-moto,
s3-seaweedfs)."""

from __future__ import annotations

import errno
import json
import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from ocispec.digest import Digest
from storage import paths
from storage.driver import fswriters
from storage.driver.base import StorageDriver
from storage.driver.fs import FilesystemDriver
from storage.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    TagUnknown,
    UploadRangeInvalid,
    UploadUnknown,
)
from storage.repository import Storage
from tests.support.images import build_index, simple_image


def push_blob(storage: Storage, repo: str, data: bytes, chunk: int = 1 << 20) -> Digest:
    status = storage.uploads.start(repo)
    storage.uploads.append(repo, status.id, (data[i:i + chunk] for i in range(0, len(data), chunk)))
    digest = Digest.of(data)
    storage.uploads.complete(repo, status.id, digest)
    return digest


def push_image(storage: Storage, repo: str, image, tag: str | None = None) -> Digest:  # type: ignore[no-untyped-def]
    for blob in image.blobs():
        push_blob(storage, repo, blob.data)
    return storage.repository(repo).manifests.put(image.manifest, image.media_type, tags=(tag,) if tag else ()).digest


def test_upload_complete_links_blob_once_in_cas(driver: StorageDriver) -> None:
    storage = Storage(driver)
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = push_blob(storage, "a/one", data)
    assert push_blob(storage, "b/two", data) == digest
    for repo in ("a/one", "b/two"):
        info = storage.repository(repo).blobs.stat(digest)
        assert info.size == len(data)
    with storage.blobs.open(digest, 5) as stream:
        assert stream.read() == data[5:]
    cas_entries = list(driver.walk(paths.BLOBS))
    assert [f.key for f in cas_entries] == [paths.blob_data(digest)]
    with pytest.raises(BlobUnknown):
        storage.repository("c/three").blobs.stat(digest)


def test_upload_continued_by_another_replica_is_rehashed(driver: StorageDriver, driver_replica: StorageDriver) -> None:
    first, second = Storage(driver), Storage(driver_replica)
    data = os.urandom(2 * 1024 * 1024)
    status = first.uploads.start("r/x")
    first.uploads.append("r/x", status.id, [data[:1000]])
    assert second.uploads.status("r/x", status.id).size == 1000
    second.uploads.append("r/x", status.id, [data[1000:]], expected_offset=1000)
    info = first.uploads.complete("r/x", status.id, Digest.of(data))  # first's hash saw only 1000 bytes
    assert info.size == len(data)
    assert second.repository("r/x").blobs.stat(Digest.of(data)).size == len(data)


@pytest.mark.parametrize("hashed", [True, False], ids=["running-hash", "read-back"])
def test_an_upload_whose_fsync_failed_is_gone_and_never_placed_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      hashed: bool) -> None:
    """A completion whose fsync reports a write error (or a full disk) removes the upload: the
    kernel reports such an error once, so a retried completion would find its bytes in the page
    cache, verify them and place a blob that may never have reached the disk."""
    storage = Storage(FilesystemDriver(tmp_path))
    data = os.urandom(3 * 1024 * 1024)
    status = storage.uploads.start("r/x")
    storage.uploads.append("r/x", status.id, [data])
    if not hashed:  # as when the PATCHes reached another process: the PUT reads the upload back
        storage = Storage(FilesystemDriver(tmp_path))

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as patched:
        patched.setattr(fswriters.os, "fsync", failing_fsync)
        with pytest.raises(OSError):
            storage.uploads.complete("r/x", status.id, Digest.of(data))
    with pytest.raises(UploadUnknown):
        storage.uploads.complete("r/x", status.id, Digest.of(data))
    with pytest.raises(BlobUnknown):
        storage.repository("r/x").blobs.stat(Digest.of(data))


def test_wrong_digest_leaves_nothing_visible(driver: StorageDriver) -> None:
    storage = Storage(driver)
    status = storage.uploads.start("r/bad")
    storage.uploads.append("r/bad", status.id, [b"actual bytes"])
    claimed = Digest.of(b"claimed bytes")
    with pytest.raises(DigestInvalid):
        storage.uploads.complete("r/bad", status.id, claimed)
    assert not storage.blobs.exists(claimed) and not storage.blobs.exists(Digest.of(b"actual bytes"))
    with pytest.raises(UploadUnknown):
        storage.uploads.status("r/bad", status.id)


def test_sha512_upload(driver: StorageDriver) -> None:
    storage = Storage(driver)
    status = storage.uploads.start("r/512")
    storage.uploads.append("r/512", status.id, [b"five twelve"])
    digest = Digest.of(b"five twelve", "sha512")
    storage.uploads.complete("r/512", status.id, digest)
    assert storage.repository("r/512").blobs.stat(digest).size == 11


def test_chunk_at_wrong_offset_is_refused(driver: StorageDriver) -> None:
    storage = Storage(driver)
    status = storage.uploads.start("r/off")
    storage.uploads.append("r/off", status.id, [b"12345"])
    with pytest.raises(UploadRangeInvalid) as info:
        storage.uploads.append("r/off", status.id, [b"x"], expected_offset=3)
    assert info.value.current_size == 5
    assert storage.uploads.status("r/off", status.id).size == 5


def test_purge_removes_only_old_uploads(driver: StorageDriver) -> None:
    storage = Storage(driver)
    old = storage.uploads.start("p/old")
    storage.uploads.append("p/old", old.id, [b"abandoned"])
    fresh = storage.uploads.start("p/fresh")
    assert storage.uploads.purge(storage.all_repository_dirs(), 3600, now=old.started_at + 10) == 0
    removed = storage.uploads.purge(["p/old"], 3600, now=old.started_at + 7200)
    assert removed == 1
    with pytest.raises(UploadUnknown):
        storage.uploads.status("p/old", old.id)
    assert storage.uploads.status("p/fresh", fresh.id).size == 0


def test_manifest_round_trip_tags_and_catalog(driver: StorageDriver) -> None:
    storage = Storage(driver)
    image = simple_image("store")
    digest = push_image(storage, "team/app", image, "v1")
    repo = storage.repository("team/app")
    stored = repo.manifests.get(repo.tags.resolve("v1"))
    assert stored.raw == image.manifest and stored.media_type == image.media_type and stored.digest == digest
    repo.tags.set("v2", digest)
    assert repo.tags.list() == ["v1", "v2"]
    push_image(storage, "team/app/nested", image, "x")
    push_blob(storage, "only/blobs", b"no manifests here")
    assert storage.repositories() == ["team/app", "team/app/nested"]
    with pytest.raises(NameUnknown):
        storage.repository("nobody/here").tags.list()


def test_manifest_validation(driver: StorageDriver) -> None:
    storage = Storage(driver)
    image = simple_image("validate")
    repo = storage.repository("v/m")
    with pytest.raises(ManifestBlobUnknown):
        repo.manifests.put(image.manifest, image.media_type)
    with pytest.raises(ManifestInvalid):
        repo.manifests.put(b"{}", image.media_type)
    with pytest.raises(DigestInvalid):
        push_image(storage, "v/m", image)
        repo.manifests.put(image.manifest, image.media_type, Digest.of(b"other"))
    index = build_index([image, simple_image("absent")])
    with pytest.raises(ManifestBlobUnknown):
        repo.manifests.put(index.manifest, index.media_type)


def test_manifest_delete_removes_tags_and_referrer(driver: StorageDriver) -> None:
    storage = Storage(driver)
    image = simple_image("subject")
    subject = push_image(storage, "d/m", image, "keep")
    artifact = simple_image("artifact")
    body = json.loads(artifact.manifest)
    body["subject"] = image.descriptor()
    body["artifactType"] = "application/x-test"
    raw = json.dumps(body).encode()
    for blob in artifact.blobs():
        push_blob(storage, "d/m", blob.data)
    repo = storage.repository("d/m")
    result = repo.manifests.put(raw, artifact.media_type, tags=("sig",))
    assert result.subject == subject
    assert [r["artifactType"] for r in repo.referrers.list(subject)] == ["application/x-test"]
    assert repo.referrers.list(subject, "application/other") == []
    repo.manifests.delete(result.digest)
    assert repo.referrers.list(subject) == []
    with pytest.raises(TagUnknown):
        repo.tags.resolve("sig")
    with pytest.raises(ManifestUnknown):
        repo.manifests.get(result.digest)
    assert repo.tags.resolve("keep") == subject


def test_concurrent_uploads_of_the_same_blob_and_tag(driver: StorageDriver) -> None:
    storage = Storage(driver)
    data = os.urandom(1024 * 1024)
    image = simple_image("race")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            push_blob(storage, f"race/r{i % 2}", data, chunk=256 * 1024)
            push_image(storage, "race/tagged", image, "same")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with storage.blobs.open(Digest.of(data)) as stream:
        assert stream.read() == data
    repo = storage.repository("race/tagged")
    assert repo.manifests.get(repo.tags.resolve("same")).raw == image.manifest


def test_crash_before_link_leaves_blob_invisible_but_reuploadable(driver: StorageDriver) -> None:
    storage = Storage(driver)
    data = b"crash in the middle"
    digest = Digest.of(data)
    # A crash after the CAS move but before the repository link: the CAS has it, the repo does not.
    driver.put(paths.blob_data(digest), data)
    with pytest.raises(BlobUnknown):
        storage.repository("c/r").blobs.stat(digest)
    assert push_blob(storage, "c/r", data) == digest
    assert storage.repository("c/r").blobs.stat(digest).size == len(data)


def test_upload_memory_stays_flat(driver: StorageDriver) -> None:
    storage = Storage(driver)
    chunk = os.urandom(1024 * 1024)
    status = storage.uploads.start("mem/flat")
    tracemalloc.start()
    try:
        session = storage.uploads.open_session("mem/flat", status.id)
        for _ in range(48):
            session.write(chunk)
        session.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * 1024 * 1024, f"peak {peak} bytes for a 48 MiB upload"
    hasher = Digest.of(b"").hasher()
    for _ in range(48):
        hasher.update(chunk)
    storage.uploads.complete("mem/flat", status.id, Digest("sha256", hasher.hexdigest()))


def test_chunk_still_being_written_cannot_change_a_completed_blob(driver: StorageDriver) -> None:
    from storage.errors import StorageError, UploadInvalid

    storage = Storage(driver)
    data = b"the verified bytes"
    status = storage.uploads.start("late/chunk")
    storage.uploads.append("late/chunk", status.id, [data])
    late = storage.uploads.open_session("late/chunk", status.id)  # a PATCH whose body is still arriving
    try:
        storage.uploads.complete("late/chunk", status.id, Digest.of(data))
        completed = True
    except UploadInvalid:
        completed = False  # disk: refused while a writer is open
    late.write(b"JUNK")
    try:
        late.close()
    except StorageError:
        pass
    if completed:
        with storage.blobs.open(Digest.of(data)) as stream:
            assert stream.read() == data
    else:
        assert not storage.blobs.exists(Digest.of(data))
        assert not storage.blobs.exists(Digest.of(data + b"JUNK"))


def test_a_manifest_one_replica_has_read_is_unknown_there_once_another_deleted_it(driver: StorageDriver) -> None:
    """Each process keeps the manifests it read (storage.manifest_cache); whether the repository
    still has one is asked of storage on every read, so a delete through another replica (another
    Storage over the same bucket or disk) is seen at once, by digest and by tag."""
    image = simple_image("cached-then-deleted")
    one, other = Storage(driver), Storage(driver)
    digest = push_image(one, "cache/app", image, "v1")
    reader = other.repository("cache/app").manifests
    assert reader.get_tagged("v1").raw == reader.get(digest).raw == image.manifest
    assert other.manifest_cache.get("cache/app", digest) is not None  # it is cached there now
    one.repository("cache/app").manifests.delete(digest)
    with pytest.raises(ManifestUnknown):
        reader.get(digest)
    with pytest.raises(TagUnknown):
        reader.get_tagged("v1")
    push_image(one, "cache/app", image, "v2")  # pushed again: visible again, under its new tag only
    assert reader.get_tagged("v2").digest == digest
    with pytest.raises(TagUnknown):
        reader.get_tagged("v1")
