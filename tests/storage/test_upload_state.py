"""An upload's state object holds where it stands (storage.upload_state): on S3 the appending
writer hands its state (multipart upload, parts, the bytes not yet a part) to the upload instead
of keeping a sidecar, so each step reads one object and a PATCH writes one. Run on every driver
(see conftest): on disk the file is the state, and the same steps give the same results.
"""

from __future__ import annotations

import json
import logging
import os
import time
import tracemalloc
import uuid
from collections.abc import Callable
from typing import cast

import pytest

from ocispec.digest import Digest
from storage import paths
from storage.driver.base import StorageDriver, WriterState
from storage.errors import BlobUnknown, DigestInvalid, PathNotFound, UploadInvalid, UploadUnknown
from storage.repository import Storage
from storage.upload_state import load_saved_upload

MiB = 1024 * 1024


def upload_keys(driver: StorageDriver, repo: str) -> list[str]:
    try:
        return sorted(info.key for info in driver.walk(paths.uploads(repo)))
    except PathNotFound:
        return []


@pytest.mark.parametrize("size", [1000, 11 * MiB + 3])
def test_a_writer_whose_caller_keeps_its_state_writes_none_of_its_own(driver: StorageDriver,
                                                                      driver_replica: StorageDriver,
                                                                      size: int) -> None:
    data = os.urandom(size)
    half = size // 2
    first = driver.writer("w/data", append=True, saved=WriterState())
    first.write(data[:half])
    first.close()
    saved = first.saved_state()
    assert first.saved_state() is None  # handed over once
    if driver.capabilities.external_writer_state:
        assert saved is not None
        # Nothing beside the key stands for it: no sidecar, no object (the parts are invisible).
        assert list(driver.walk("w")) == []
    else:
        assert saved is None  # the file is the state; `saved` is ignored
        saved = WriterState()
    # Another replica continues (from a copy: a writer takes the tail it is given over).
    second = driver_replica.writer("w/data", append=True, saved=WriterState(saved.header, bytearray(saved.tail)))
    assert second.size == half
    second.close()
    assert second.saved_state() is None  # nothing written: nothing new to keep
    third = driver_replica.writer("w/data", append=True, saved=saved)
    third.write(data[half:])
    third.commit_to("w/blob")
    assert driver.get("w/blob") == data
    assert not list(driver.pending_uploads())
    # What may be left at the key (S3: the parts completed there, then copied) is the caller's to
    # remove, with the state it keeps: one batch.
    driver.delete_many(["w/data"])
    assert [info.key for info in driver.walk("w")] == ["w/blob"]


def test_a_blob_under_a_part_in_one_session_needs_no_multipart_upload(store_factory: Callable[..., StorageDriver]
                                                                       ) -> None:
    """A session that began with nothing keeps what it has as the tail, up to a part (on S3 a
    blob that came in one PATCH is one PUT at its end); one continuing an upload sends a tail of
    at least the 5 MiB minimum as a part, so what the next session reads back stays small."""
    driver = store_factory(part_size=10 * MiB)
    data = os.urandom(13 * MiB)
    first = driver.writer("p/data", append=True, saved=WriterState())
    first.write(data[:7 * MiB])
    first.close()
    assert not list(driver.pending_uploads())
    saved = first.saved_state() or WriterState()
    second = driver.writer("p/data", append=True, saved=saved)
    second.write(data[7 * MiB:8 * MiB])
    second.close()
    if driver.capabilities.external_writer_state:
        assert len(list(driver.pending_uploads())) == 1  # 8 MiB: sent as the first part
        saved = second.saved_state() or WriterState()
        assert not saved.tail
    third = driver.writer("p/data", append=True, saved=saved)
    assert third.size == 8 * MiB
    third.write(data[8 * MiB:])
    third.commit_to("p/blob")
    assert driver.get("p/blob") == data
    assert not list(driver.pending_uploads())


def test_each_step_of_an_upload_reads_where_it_stands_from_its_state(driver: StorageDriver,
                                                                     driver_replica: StorageDriver) -> None:
    storage, other = Storage(driver), Storage(driver_replica)
    data = os.urandom(7 * MiB + 5)  # on S3 (5 MiB test parts): a part and a tail
    upload = storage.uploads.start("s/steps")
    storage.uploads.append("s/steps", upload.id, [data[:6 * MiB]])
    assert other.uploads.status("s/steps", upload.id).size == 6 * MiB
    other.uploads.append("s/steps", upload.id, [data[6 * MiB:]], expected_offset=6 * MiB)
    assert storage.uploads.status("s/steps", upload.id).size == len(data)
    state = load_saved_upload(driver, paths.upload_state("s/steps", upload.id))
    if driver.capabilities.external_writer_state:
        assert state.header.size == len(data) and state.writer is not None and state.writer.header
        assert upload_keys(driver, "s/steps") == [paths.upload_state("s/steps", upload.id)]  # no sidecar
    storage.uploads.complete("s/steps", upload.id, Digest.of(data))
    with storage.repository("s/steps").blobs.open(Digest.of(data)) as stream:
        assert stream.read() == data
    assert upload_keys(driver, "s/steps") == [] and not list(driver.pending_uploads())


def test_a_completion_killed_after_finishing_its_parts_is_completed_by_a_retry(driver: StorageDriver,
                                                                               driver_replica: StorageDriver) -> None:
    """Killed after S3 completed the parts at the upload's key, before the state was dropped: the
    state still names them. A retry on another replica takes the object they made (of the size the
    state says), verifies it by reading it back, and finishes."""
    storage = Storage(driver)
    data = os.urandom(7 * MiB)
    upload = storage.uploads.start("k/parts")
    storage.uploads.append("k/parts", upload.id, [data])
    state = load_saved_upload(driver, paths.upload_state("k/parts", upload.id))
    driver.writer(paths.upload_data("k/parts", upload.id), append=True, saved=state.writer).commit()
    retried = Storage(driver_replica)
    assert retried.uploads.complete("k/parts", upload.id, Digest.of(data)).size == len(data)
    with retried.repository("k/parts").blobs.open(Digest.of(data)) as stream:
        assert stream.read() == data
    assert upload_keys(driver, "k/parts") == [] and not list(driver.pending_uploads())


@pytest.mark.parametrize("data_key_left", [True, False])
def test_a_completion_killed_after_copying_the_bytes_on_is_finished_or_refused(
        driver: StorageDriver, driver_replica: StorageDriver, data_key_left: bool) -> None:
    """Killed after the bytes reached the CAS, before the link and the state's removal. On S3 the
    object the parts made is still at the upload's key (it goes in one batch with the state): a
    retry takes it, verifies it and finishes. Where the upload's bytes are gone (on disk the file
    was renamed; on S3 only if something deleted that key) the retry cannot finish: it refuses
    and removes the upload; nothing is visible until the client pushes the blob again."""
    storage = Storage(driver)
    data = os.urandom(7 * MiB)
    digest = Digest.of(data)
    upload = storage.uploads.start("k/moved")
    storage.uploads.append("k/moved", upload.id, [data])
    state = load_saved_upload(driver, paths.upload_state("k/moved", upload.id))
    data_key = paths.upload_data("k/moved", upload.id)
    driver.writer(data_key, append=True, saved=state.writer).commit_to(paths.blob_data(digest))
    if not data_key_left:
        driver.delete_many([data_key])
    retried = Storage(driver_replica)
    finishes = data_key_left and driver.capabilities.external_writer_state
    if finishes:
        assert retried.uploads.complete("k/moved", upload.id, digest).size == len(data)
    else:
        # S3: the parts and their object are gone; on disk the emptied file is an empty upload.
        with pytest.raises((UploadUnknown, DigestInvalid)):
            retried.uploads.complete("k/moved", upload.id, digest)
        with pytest.raises(UploadUnknown):
            retried.uploads.status("k/moved", upload.id)
        with pytest.raises(BlobUnknown):
            retried.repository("k/moved").blobs.stat(digest)
        again = retried.uploads.start("k/moved")
        retried.uploads.append("k/moved", again.id, [data])
        assert retried.uploads.complete("k/moved", again.id, digest).size == len(data)
    with retried.repository("k/moved").blobs.open(digest) as stream:
        assert stream.read() == data
    assert upload_keys(driver, "k/moved") == [] and not list(driver.pending_uploads())


def test_an_upload_begun_before_states_held_the_writer_continues(driver: StorageDriver) -> None:
    """A state of the older form (JSON alone: the driver keeps the writer's state, on S3 in a
    sidecar) is continued the way it was begun, and finishes."""
    storage = Storage(driver)
    repo, upload_id = "old/upload", str(uuid.uuid4())
    data = os.urandom(6 * MiB + 7)
    driver.put(paths.upload_state(repo, upload_id), json.dumps({"repository": repo, "startedat": time.time()}).encode())
    writer = driver.writer(paths.upload_data(repo, upload_id), append=True)
    writer.write(data[:MiB])
    writer.close()
    assert storage.uploads.status(repo, upload_id).size == MiB
    storage.uploads.append(repo, upload_id, [data[MiB:]], expected_offset=MiB)
    assert storage.uploads.status(repo, upload_id).size == len(data)
    storage.uploads.complete(repo, upload_id, Digest.of(data))
    with storage.repository(repo).blobs.open(Digest.of(data)) as stream:
        assert stream.read() == data
    assert upload_keys(driver, repo) == [] and not list(driver.pending_uploads())


# -- two sessions on one upload (the running hash must never stand for another session's bytes) ----
class StatePutHook:
    """A driver that runs `after` once, right after its next put of an upload's state: another
    thread's `close` coming between this one's state PUT and the hash it gives back."""

    def __init__(self, inner: StorageDriver) -> None:
        self.inner = inner
        self.after: Callable[[], object] | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes | bytearray) -> None:
        self.inner.put(key, data)
        if self.after is not None and key.endswith("/startedat"):
            after, self.after = self.after, None
            after()


def refused_and_absent(storage: Storage, repo: str, upload_id: str, data: bytes) -> None:
    """`data`'s digest is refused for the upload, and nothing is stored under it."""
    digest = Digest.of(data)
    with pytest.raises(DigestInvalid):
        storage.uploads.complete(repo, upload_id, digest)
    with pytest.raises(PathNotFound):
        storage.driver.head(paths.blob_data(digest))
    with pytest.raises(UploadUnknown):  # a refused completion removes the upload
        storage.uploads.status(repo, upload_id)


def test_sessions_of_two_replicas_on_one_upload_never_put_wrong_bytes_in_the_cas(
        driver: StorageDriver, driver_replica: StorageDriver) -> None:
    """Replicas A and B each PATCH 1000 different bytes into one new upload; B's state lands last.
    A's running hash is of A's bytes: A must not verify its own digest with it and then finish
    B's bytes under that digest. The state saved last is the upload (on disk both PATCHes
    appended to the one file)."""
    a, b = Storage(driver), Storage(driver_replica)
    repo = "race/replicas"
    x, y = os.urandom(1000), os.urandom(1000)
    saved_last = y if driver.capabilities.external_writer_state else x + y
    for complete_with in (x, saved_last):
        upload = a.uploads.start(repo)
        first, second = a.uploads.open_session(repo, upload.id), b.uploads.open_session(repo, upload.id)
        first.write(x)
        second.write(y)
        first.close()
        second.close()
        if complete_with is x:
            refused_and_absent(a, repo, upload.id, x)
        else:
            assert a.uploads.complete(repo, upload.id, Digest.of(saved_last)).size == len(saved_last)
            assert driver.get(paths.blob_data(Digest.of(saved_last))) == saved_last


def test_two_threads_closing_sessions_on_one_upload_never_put_wrong_bytes_in_the_cas(driver: StorageDriver) -> None:
    """On one replica: thread A saves its state, thread B then saves its own and gives its hash
    back, and A gives its hash back last. The hash kept is A's, the state B's: refused."""
    hooked = StatePutHook(driver)
    storage = Storage(cast(StorageDriver, hooked))
    repo = "race/threads"
    x, y = os.urandom(1000), os.urandom(1000)
    upload = storage.uploads.start(repo)
    first, second = storage.uploads.open_session(repo, upload.id), storage.uploads.open_session(repo, upload.id)
    first.write(x)
    second.write(y)
    hooked.after = second.close  # B's whole close, between A's state PUT and A's hash given back
    first.close()
    if hooked.after is not None:  # no state PUT (on disk the file is the state): B closes after A
        hooked.after = None
        second.close()
    refused_and_absent(storage, repo, upload.id, x)


# -- the format: versions before it refuse it rather than continue it in a sidecar ------------------
def test_the_state_says_its_format_and_older_versions_cannot_take_it_for_theirs(driver: StorageDriver) -> None:
    storage = Storage(driver)
    upload = storage.uploads.start("fmt/app")
    key = paths.upload_state("fmt/app", upload.id)
    for step in ("POST", "PATCH"):
        raw = driver.get(key)
        assert json.loads(raw.split(b"\n", 1)[0])["v"] == 2, step
        if driver.capabilities.external_writer_state:
            # Versions before 2 read the state as one JSON object (`json.loads`): they refuse it
            # instead of continuing the upload in a sidecar this version would not read.
            with pytest.raises(ValueError):
                json.loads(raw)
        else:  # on disk every version continues the data file alike: they read it as before
            assert json.loads(raw)["startedat"] == upload.started_at
        storage.uploads.append("fmt/app", upload.id, [b"some bytes"])


# -- a state that cannot be read ---------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["not JSON", "a newer format", "the writer's line"])
def test_an_unreadable_state_is_an_invalid_upload_and_goes_with_its_age(driver: StorageDriver, damage: str,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Every step answers UploadInvalid (the registry's BLOB_UPLOAD_INVALID, not a 500 with a
    traceback), told in one warning line; a cancel removes it, and the purge dates it by its
    object's time, not as if it were from 1970."""
    storage = Storage(driver)
    repo = "bad/state"
    uploads = [storage.uploads.start(repo) for _ in range(2)]
    for upload in uploads:
        storage.uploads.append(repo, upload.id, [b"abc"])
        key = paths.upload_state(repo, upload.id)
        raw = driver.get(key)
        head, _, rest = raw.partition(b"\n")
        if damage == "not JSON":
            driver.put(key, b"{not json" + raw)
        elif damage == "a newer format":
            driver.put(key, head.replace(b'"v":2', b'"v":3') + b"\n" + rest)
        else:
            driver.put(key, head + b'\n{"v":9,"parts":"?"}\n' + rest.partition(b"\n")[2])
    unusable = damage != "the writer's line" or driver.capabilities.external_writer_state
    upload = uploads[0]
    steps: list[Callable[[], object]] = [
        lambda: storage.uploads.open_session(repo, upload.id),
        lambda: storage.uploads.complete(repo, upload.id, Digest.of(b"abc"))]
    if damage != "the writer's line":  # (the first line is all a status reads)
        steps.append(lambda: storage.uploads.status(repo, upload.id))
    for step in steps:
        caplog.clear()
        if not unusable:  # on disk the file is the writer's state: a line it never reads is no harm
            step()
            continue
        with pytest.raises(UploadInvalid):
            step()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and warnings[0].exc_info is None and upload.id in warnings[0].getMessage()
    if not unusable:
        return
    storage.uploads.cancel(repo, upload.id)
    with pytest.raises(UploadUnknown):
        storage.uploads.status(repo, upload.id)
    # The other one: young by its object's time, so kept; gone once older than the purge's age.
    assert storage.uploads.purge([repo], 3600) == 0
    assert storage.uploads.purge([repo], 3600, now=time.time() + 7200) == 1
    assert upload_keys(driver, repo) == []


# -- memory: a request holds about one part, not copies of it ----------------------------------------
def test_a_patch_holds_one_tail_not_copies_of_it(store_factory: Callable[..., StorageDriver]) -> None:
    """A first PATCH keeps up to a part in the state; the next PATCH reads it back, writes to it
    and saves it again; the PUT ?digest= finishes it. Each holds that tail once (plus the pieces a
    read or write passes through), not two or three copies of it."""
    driver = store_factory(part_size=16 * MiB)
    storage = Storage(driver)
    tail = os.urandom(15 * MiB)
    upload = storage.uploads.start("mem/app")
    more = os.urandom(MiB // 2)
    tracemalloc.start()
    try:
        session = storage.uploads.open_session("mem/app", upload.id)
        session.write(tail)
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        session.close()  # the state PUT: the tail is its body, not a copy of it
        assert tracemalloc.get_traced_memory()[1] - base < 0.2 * len(tail)
        del session
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        session = storage.uploads.open_session("mem/app", upload.id)
        session.write(more)
        assert tracemalloc.get_traced_memory()[1] - base < 1.4 * len(tail)
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        session.close()  # over 5 MiB: sent as a part (no copy), and the state saved without it
        assert tracemalloc.get_traced_memory()[1] - base < 0.2 * len(tail)
        del session
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        storage.uploads.complete("mem/app", upload.id, Digest.of(tail + more))
        assert tracemalloc.get_traced_memory()[1] - base < 1.4 * len(tail)
    finally:
        tracemalloc.stop()
