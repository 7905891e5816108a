"""A collection never removes what a push that succeeded refers to, whatever the pushes do while it
runs (storage.sweeping). Each test stops the collection at one point (its progress callback runs
between its steps) and pushes there, on every driver: bytes already in the store with an old
mtime and unreferenced, which the collection has chosen or is about to choose to delete.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from ocispec.digest import Digest
from storage import ManifestBlobUnknown, Storage, StorageDriver, collect
from storage.driver.fs import FilesystemDriver
from storage.lease import Lease
from tests.support.images import Image, Index, build_index, simple_image

from .test_stores import push_blob, push_image

FAR_FUTURE = 10**10  # `now` for the collection: everything in the store is older than the grace period


def _orphaned_image(storage: Storage, repo: str, seed: str):  # type: ignore[no-untyped-def]
    """An image pushed, then its manifest deleted: manifest and blobs are unreferenced bytes in the
    CAS, exactly what a client pushing the same image again reuses."""
    image = simple_image(seed)
    digest = push_image(storage, repo, image, "v1")
    storage.repository(repo).manifests.delete(digest)
    return image, digest


def _at(stage: str, action: Callable[[], None]) -> Callable[[str, int, int], None]:
    """A progress callback that runs `action` once, the first time the collection reports `stage`."""
    done = threading.Event()

    def progress(reported: str, _done: int, _total: int) -> None:
        if reported == stage and not done.is_set():
            done.set()
            action()
    return progress


def test_a_manifest_pushed_again_while_the_collection_marks_keeps_everything(driver: StorageDriver) -> None:
    storage = Storage(driver)
    image, digest = _orphaned_image(storage, "safe/app", "marking")
    manifests = storage.repository("safe/app").manifests

    def push_again() -> None:  # after the collection walked the tree: it did not see this push
        manifests.put(image.manifest, image.media_type, tags=("v1",))

    report = collect(storage, grace_seconds=0, now=FAR_FUTURE, progress=_at("manifests", push_again))

    assert manifests.tags.resolve("v1") == digest
    assert manifests.get(digest).raw == image.manifest
    for blob in image.blobs():
        assert storage.repository("safe/app").blobs.stat(Digest.parse(blob.digest)).size == blob.size
    assert report.spared >= 1 + len(image.blobs())
    assert digest not in report.swept


def test_a_blob_uploaded_again_while_the_collection_deletes_it_is_put_back(driver: StorageDriver) -> None:
    storage = Storage(driver)
    data = b"an orphan layer, uploaded again" * 100
    orphan = push_blob(storage, "safe/blob", data)
    storage.repository("safe/blob").blobs.unlink(orphan)
    waiting = threading.Event()
    original_sleep = storage.blobs.sweeps.sleep

    def sleep(seconds: float) -> None:
        waiting.set()  # the upload saw the collection's notice and waits it out
        original_sleep(seconds)

    storage.blobs.sweeps.sleep = sleep
    results: list[Digest | BaseException] = []

    def upload() -> None:
        try:
            results.append(push_blob(storage, "safe/blob", data))
        except BaseException as exc:
            results.append(exc)

    uploader = threading.Thread(target=upload)

    def upload_while_deleting() -> None:
        uploader.start()
        assert waiting.wait(60), "the upload never waited for the deleting collection"

    report = collect(storage, grace_seconds=0, now=FAR_FUTURE, progress=_at("sweep", upload_while_deleting))
    uploader.join(60)

    assert orphan in report.swept  # the collection deleted the old copy...
    assert results == [orphan]  # ...and the upload, answered success, put its own in its place
    assert storage.repository("safe/blob").blobs.stat(orphan).size == len(data)
    with storage.repository("safe/blob").blobs.open(orphan) as stream:
        assert stream.read() == data


def test_a_manifest_whose_blobs_a_deleting_collection_took_is_refused_not_left_broken(
        driver: StorageDriver) -> None:
    storage = Storage(driver)
    image, digest = _orphaned_image(storage, "safe/late", "deleting")
    manifests = storage.repository("safe/late").manifests
    waiting = threading.Event()
    original_sleep = storage.blobs.sweeps.sleep

    def sleep(seconds: float) -> None:
        waiting.set()
        original_sleep(seconds)

    storage.blobs.sweeps.sleep = sleep
    results: list[object] = []

    def push() -> None:
        try:
            results.append(manifests.put(image.manifest, image.media_type, tags=("v1",)).digest)
        except BaseException as exc:
            results.append(exc)

    pusher = threading.Thread(target=push)

    def push_while_deleting() -> None:
        pusher.start()
        assert waiting.wait(60), "the manifest push never waited for the deleting collection"

    collect(storage, grace_seconds=0, now=FAR_FUTURE, progress=_at("sweep", push_while_deleting))
    pusher.join(60)

    # Its layers went while it waited: the push fails, and leaves no manifest naming missing blobs.
    assert len(results) == 1 and isinstance(results[0], ManifestBlobUnknown), results
    assert not manifests.exists(digest)
    assert manifests.tags.tags_of(digest) == []


def test_an_index_pushed_while_its_childs_push_waits_out_a_collection_fails_with_it(driver: StorageDriver) -> None:
    """Two clients: one pushes an image whose layers a deleting collection takes (it waits, then is
    refused and withdraws the revision it wrote); the other sees that child there meanwhile and
    pushes an index naming it. The index must be refused too, not answered 201 and left naming
    a child that is gone."""
    storage = Storage(driver)
    image, digest = _orphaned_image(storage, "safe/index", "index")
    index = build_index([image])
    manifests = storage.repository("safe/index").manifests
    sleepers: set[str] = set()
    original_sleep = storage.blobs.sweeps.sleep

    def sleep(seconds: float) -> None:
        sleepers.add(threading.current_thread().name)
        original_sleep(seconds)

    storage.blobs.sweeps.sleep = sleep
    results: dict[str, object] = {}

    def push(name: str, target: Image | Index) -> None:
        try:
            results[name] = manifests.put(target.manifest, target.media_type, tags=(name,)).digest
        except BaseException as exc:
            results[name] = exc

    child = threading.Thread(target=push, args=("child", image), name="child")
    parent = threading.Thread(target=push, args=("index", index), name="index")

    def wait_for(name: str, thread: threading.Thread) -> None:
        deadline = time.monotonic() + 60
        while name not in sleepers and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def both_while_deleting() -> None:
        child.start()
        wait_for("child", child)
        assert "child" in sleepers, "the child's push never waited for the deleting collection"
        assert manifests.exists(digest)  # what the second client sees: the child is there
        parent.start()
        wait_for("index", parent)  # it waits too, or it was answered already (the bug)

    collect(storage, grace_seconds=0, now=FAR_FUTURE, progress=_at("sweep", both_while_deleting))
    child.join(60)
    parent.join(60)

    assert isinstance(results["child"], ManifestBlobUnknown), results
    assert isinstance(results["index"], ManifestBlobUnknown), results
    assert not manifests.exists(Digest.parse(index.digest))
    assert manifests.tags.tags_of(Digest.parse(index.digest)) == []


def _collection_ends_right_after(writer: StorageDriver, linking: str, collector: Storage) -> threading.Thread:
    """Stage the race the notices alone missed: a collection (on `collector`, another replica)
    chose its candidates and is about to delete; the writer checks the bytes are there and writes
    its link (the first `put` of a key containing `linking`), and the collection deletes and ends
    before the writer looks for notices. Returns the collection's thread, started."""
    deleting, linked = threading.Event(), threading.Event()

    def pause_before_deleting() -> None:
        deleting.set()
        assert linked.wait(60), "the writer never linked"

    collection = threading.Thread(target=collect, args=(collector,), kwargs={
        "grace_seconds": 0, "now": FAR_FUTURE, "progress": _at("sweep", pause_before_deleting)})
    real_put, real_put_many = writer.put, writer.put_many

    def wrote(keys: list[str]) -> None:
        if any(linking in key for key in keys) and not linked.is_set():
            linked.set()
            collection.join(60)  # it deletes and withdraws its notice before we look for one

    def put(key: str, data: bytes | bytearray) -> None:
        real_put(key, data)
        wrote([key])

    def put_many(items: Sequence[tuple[str, bytes | bytearray]]) -> None:  # a manifest's bytes and revision link
        real_put_many(items)
        wrote([key for key, _ in items])

    writer.put = put  # type: ignore[method-assign]
    writer.put_many = put_many  # type: ignore[method-assign]
    collection.start()
    assert deleting.wait(60), "the collection never got to deleting"
    return collection


def test_a_blob_linked_just_before_a_collection_deletes_it_and_ends_is_put_back(
        driver: StorageDriver, driver_replica: StorageDriver) -> None:
    """The collection leaves a finished mark: the upload that finds no notice any more still learns
    that one ended since it checked the bytes, looks again, and puts its own copy back (this
    answered 201 for a blob that was gone, once, in the GC stress test over SeaweedFS)."""
    collector = Storage(driver)
    data = b"an orphan layer, linked as the collection ends" * 50
    orphan = push_blob(collector, "safe/ended", data)
    collector.repository("safe/ended").blobs.unlink(orphan)
    collection = _collection_ends_right_after(driver_replica, "/_layers/", collector)

    assert push_blob(Storage(driver_replica), "safe/ended", data) == orphan
    collection.join(60)
    assert not collection.is_alive()
    served = Storage(driver).repository("safe/ended").blobs
    assert served.stat(orphan).size == len(data)
    with served.open(orphan) as stream:
        assert stream.read() == data


def test_a_manifest_whose_blobs_a_collection_took_as_it_ended_is_refused_not_left_broken(
        driver: StorageDriver, driver_replica: StorageDriver) -> None:
    collector = Storage(driver)
    image, digest = _orphaned_image(collector, "safe/ended-manifest", "ended")
    collection = _collection_ends_right_after(driver_replica, "/_manifests/revisions/", collector)

    with pytest.raises(ManifestBlobUnknown):
        Storage(driver_replica).repository("safe/ended-manifest").manifests.put(
            image.manifest, image.media_type, tags=("v1",))
    collection.join(60)
    manifests = Storage(driver).repository("safe/ended-manifest").manifests
    assert not manifests.exists(digest)
    assert manifests.tags.tags_of(digest) == []


def _ended(driver: StorageDriver, holder: str, clock: Callable[[], float] = time.time, *, deleted: bool = True) -> None:
    """A collection by `holder` begins and ends, having deleted something (or not)."""
    from storage.sweeping import Collection

    collection = Collection(driver, holder, ttl=60, clock=clock)
    collection.begin()
    if deleted:
        collection.may_delete()
    collection.end()


def _sweeps_listed(driver: StorageDriver) -> set[str]:
    from storage import paths

    return {key.rsplit("/", 1)[1] for key in driver.list(paths.GC_SWEEPS)}


def test_writers_look_again_only_after_a_collection_that_ended_since_they_checked(driver: StorageDriver) -> None:
    """Finished marks cost a writer nothing once older than what it relies on; a collection that
    deleted nothing leaves none; the next collection removes old marks and turns a dead
    collector's notice into one (it deleted nothing later)."""
    from storage.sweeping import FINISHED_KEEP, Collection, SweepWatch

    watch, digest, looked = SweepWatch(driver), Digest.of(b"relied on"), []

    def there(d: Digest) -> bool:
        looked.append(d)
        return True

    now = time.time()
    _ended(driver, "long-ago-collector", lambda: now - 3 * FINISHED_KEEP)
    _ended(driver, "idle-collector", deleted=False)  # found nothing to delete: no mark
    assert watch.settle({digest}, there, since=now) == set() and looked == []  # nothing to look at

    Collection(driver, "dead-collector", ttl=10, clock=lambda: now - 120).begin()  # its collector died
    _ended(driver, "just-now-collector")
    assert watch.settle({digest}, lambda d: False, since=now) == {digest}  # it ended since: look, gone
    assert watch.settle({digest}, there, since=now) == set() and looked == [digest]

    listed = {name.rsplit(".", 1)[0] for name in _sweeps_listed(driver)}
    assert listed == {"dead-collector.finished", "just-now-collector.finished"}  # the old mark went


def test_debris_among_the_notices_neither_fails_pushes_nor_collections(driver: StorageDriver) -> None:
    """Keys no collection wrote (by hand, another tool, a clock gone wrong) are ignored by
    writers, never make them look for ever, and the far-fetched marks go at the next collection."""
    from storage import paths
    from storage.sweeping import SweepWatch

    driver.put(paths.gc_sweep("by-hand-notice"), b'{"phase": "deleting", "expires": -Infinity}')
    driver.put(f"{paths.GC_SWEEPS}/odd-digits.finished.\u00b2\u00b3", b"")
    far_future = paths.gc_sweep_finished("from-the-future", time.time() + 10**8)
    driver.put(far_future, b"")
    watch, digest = SweepWatch(driver), Digest.of(b"relied on")
    watch.sleep = lambda seconds: pytest.fail("a push waited on debris")

    assert watch.settle({digest}, lambda d: False, since=time.time() - 5) == {digest}  # the future mark: look
    _ended(driver, "next-collector")
    assert far_future.rsplit("/", 1)[1] not in _sweeps_listed(driver)
    assert watch.settle({digest}, lambda d: True, since=time.time()) == set()


def test_a_collection_ending_never_takes_a_collection_that_just_began_for_a_dead_one(
        driver: StorageDriver) -> None:
    """Two collectors at once (a lease lost in a pause): the one ending removes the bookkeeping of
    collectors with no notice, but a keep a writer records for one that began meanwhile stays."""
    from storage import paths
    from storage.sweeping import Collection, SweepWatch

    first = Collection(driver, "first-collector", ttl=60)
    first.begin()
    second = Collection(driver, "second-collector", ttl=60)
    digest = Digest.of(b"linked while the second one marks")
    real_list, sweeps_listed = driver.list, []

    def list_(prefix: str) -> list[str]:
        if prefix != paths.GC_SWEEPS:
            return real_list(prefix)
        sweeps_listed.append(prefix)
        try:
            return real_list(prefix)  # on S3 an empty listing raises PathNotFound
        finally:
            if len(sweeps_listed) == 2:  # who is alive, as the first one's end reads it
                driver.list = real_list  # type: ignore[method-assign]
                second.begin()
                SweepWatch(driver).settle({digest}, lambda d: True, since=time.time())  # keeps for it

    driver.list = list_  # type: ignore[method-assign]
    first.end()
    driver.list = real_list  # type: ignore[method-assign]

    assert len(sweeps_listed) == 2
    second.doom([digest])
    assert second.kept() == {digest}


def test_a_dead_collectors_notice_does_not_hold_pushes_and_its_lease_is_taken_over(driver: StorageDriver) -> None:
    storage = Storage(driver)
    dead = Lease(driver, "deadbeef-collector", ttl=10, clock=lambda: 0.0)  # expired since 1970
    dead.renew()
    from storage.sweeping import Collection  # the collector's side, as a dead replica left it

    Collection(driver, "deadbeef-collector", ttl=10, clock=lambda: 0.0).begin()
    storage.blobs.sweeps.sleep = lambda seconds: pytest.fail("a push waited on a dead collector")

    image, digest = _orphaned_image(storage, "safe/dead", "dead")
    storage.repository("safe/dead").manifests.put(image.manifest, image.media_type, tags=("v1",))
    report = collect(storage, grace_seconds=0, now=FAR_FUTURE)

    assert report.held_by is None  # the expired lease was taken over
    assert storage.repository("safe/dead").manifests.get(digest).raw == image.manifest


def test_one_collector_at_a_time(driver: StorageDriver) -> None:
    storage = Storage(driver)
    orphan = push_blob(storage, "safe/lease", b"unreferenced")
    live = Lease(driver, "another-replica", ttl=600)
    assert live.acquire() is None

    report = collect(storage, grace_seconds=0, now=FAR_FUTURE)
    assert report.held_by == "another-replica" and report.swept == []
    assert storage.blobs.exists(orphan)

    live.release()
    assert orphan in collect(storage, grace_seconds=0, now=FAR_FUTURE).swept


@pytest.mark.parametrize("logged", [True, False], ids=["write-ahead-log", "no-log"])
def test_a_write_into_a_directory_a_collection_removes_at_that_moment_still_lands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logged: bool) -> None:
    """On disk a prefix delete removes a directory with whatever is in it: a collection withdrawing
    `v1/gc/kept/<collector>` while a push records a keep there takes the push's temp file along.
    The push must not fail for it (it answered 500 once, in the GC stress test). With the
    write-ahead log the driver's own deletes wait for the put (one lock), so the directory goes
    as another process's atomic writer removes the directory it made when it cancels."""
    import shutil

    import storage.driver.fsfiles as fs
    from storage.driver.fs import FilesystemOptions

    driver = FilesystemDriver(FilesystemOptions(str(tmp_path), write_ahead_log=logged))
    key = "v1/gc/kept/collector-1/sha256/ab"
    real_replace = os.replace
    calls = 0

    def replace_after_the_directory_went(source: str, target: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the collection ends just before the rename
            if logged:
                shutil.rmtree(tmp_path / "v1/gc/kept/collector-1")
            else:
                driver.delete("v1/gc/kept/collector-1")
        real_replace(source, target)

    monkeypatch.setattr(fs.os, "replace", replace_after_the_directory_went)
    driver.put(key, b"kept")
    assert calls == 2 and driver.get(key) == b"kept"
    assert [p.name for p in (tmp_path / "v1/gc/kept/collector-1/sha256").iterdir()] == ["ab"]  # no temp debris


def test_a_directory_a_writer_fills_again_while_it_is_removed_is_removed_all_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefix delete on disk meets a directory that is not empty at its last step (a writer put a
    file in after the walk): it walks again instead of failing the collection that asked."""
    import errno
    import shutil

    import storage.driver.fsfiles as fs

    driver = FilesystemDriver(tmp_path)
    driver.put("v1/gc/kept/c-1/sha256/aa", b"")
    real_rmtree, calls = shutil.rmtree, []

    def refilled_once(path: str, *args: object, **kwargs: object) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOTEMPTY, "Directory not empty", path)
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fs.shutil, "rmtree", refilled_once)
    driver.delete("v1/gc/kept/c-1")
    assert len(calls) == 2 and not (tmp_path / "v1/gc/kept/c-1").exists()


def test_the_lease_is_released_whatever_withdrawing_the_notice_meets(
        driver: StorageDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collection whose clean-up fails still gives the lease back: the next collector (a
    `registry gc --wait` beside the servers) must not wait for it to expire."""
    from storage.sweeping import Collection

    def fails(self: Collection) -> None:
        raise OSError("the disk said no")

    monkeypatch.setattr(Collection, "end", fails)
    with pytest.raises(OSError):
        collect(Storage(driver), grace_seconds=0)
    assert Lease(driver, "someone-else", 60).acquire() is None  # free: taken at once
