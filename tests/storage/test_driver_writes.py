"""The driver calls the cheap paths rest on, on every driver: `head` (an object, nothing else),
`opened` (a reader and its size), the atomic writer (nothing visible before `commit`, nothing left
after `cancel` or a crash but debris the temp sweep takes) and `commit_to` (an upload finished
where it belongs). Part size is 5 MiB on S3 here, so the large cases are multipart uploads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from storage import ObjectBusy, PathNotFound
from storage.driver import StorageDriver, fswriters
from storage.driver.base import FileWriter
from storage.driver.fs import FilesystemDriver
from storage.driver.fswriters import WRITEBACK_STEP, start_writeback

MiB = 1024 * 1024


def test_head_sees_objects_only(driver: StorageDriver) -> None:
    driver.put("h/dir/obj", b"12345")
    info = driver.head("h/dir/obj")
    assert (info.key, info.size, info.is_dir) == ("h/dir/obj", 5, False)
    for not_an_object in ("h/dir", "h/absent"):
        with pytest.raises(PathNotFound):
            driver.head(not_an_object)


def test_opened_gives_the_size_with_the_bytes(driver: StorageDriver) -> None:
    data = os.urandom(3 * MiB + 7)
    driver.put("o/blob", data)
    stream, size = driver.opened("o/blob")
    with stream:
        assert size == len(data) and stream.read() == data
    with pytest.raises(PathNotFound):
        driver.opened("o/absent")


@pytest.mark.parametrize("size", [0, 1000, 11 * MiB + 3])
def test_an_atomic_write_appears_only_at_commit(driver: StorageDriver, size: int) -> None:
    data = os.urandom(size)
    driver.put("a/blob", b"old")
    writer = driver.atomic_writer("a/blob")
    for start in range(0, size, 3 * MiB):
        writer.write(data[start:start + 3 * MiB])
    assert writer.size == size
    assert driver.get("a/blob") == b"old"  # readers see the old object until the commit
    assert driver.list("a") == ["a/blob"]
    writer.commit()
    assert driver.get("a/blob") == data
    assert [info.key for info in driver.walk("a")] == ["a/blob"]
    assert not list(driver.pending_uploads())


def test_a_cancelled_or_abandoned_atomic_write_leaves_nothing_visible(driver: StorageDriver) -> None:
    data = os.urandom(11 * MiB)
    cancelled = driver.atomic_writer("c/blob")
    cancelled.write(data)
    cancelled.cancel()
    abandoned = driver.atomic_writer("c/other")  # a process killed mid-write never ends it
    abandoned.write(data)
    for key in ("c/blob", "c/other"):
        with pytest.raises(PathNotFound):
            driver.stat(key)
    assert not list(driver.walk("c"))
    # What the abandoned one left (a temp file, a multipart upload no sidecar names) is the temp
    # sweep's once old enough, and is no upload a writer could resume.
    assert all(not pending.resumable for pending in driver.pending_uploads())
    driver.remove_stale_temp(time.time() + 60)
    assert not list(driver.pending_uploads())
    assert not list(driver.walk("c"))


@pytest.mark.parametrize("size", [1000, 11 * MiB + 3])
def test_commit_to_finishes_an_upload_at_another_key(driver: StorageDriver, driver_replica: StorageDriver,
                                                    size: int) -> None:
    data = os.urandom(size)
    half = size // 2
    first = driver.writer("u/data", append=True)
    first.write(data[:half])
    first.close()
    second = driver_replica.writer("u/data", append=True)  # another replica continues and finishes it
    second.write(data[half:])
    second.commit_to("cas/blob")
    assert driver.get("cas/blob") == data
    with pytest.raises(PathNotFound):
        driver.stat("u/data")
    assert not list(driver.pending_uploads())


def test_commit_to_continuing_a_committed_object_moves_it_all(driver: StorageDriver) -> None:
    writer = driver.writer("k/data", append=True)
    writer.write(b"committed ")
    writer.commit()
    continued = driver.writer("k/data", append=True)
    continued.write(b"and appended")
    continued.commit_to("k/blob")
    assert driver.get("k/blob") == b"committed and appended"
    assert driver.list("k") == ["k/blob"]


def test_commit_to_refuses_a_file_another_writer_appended_to(tmp_path: Path) -> None:
    """Files are appended in place: a writer finishing an upload whose file grew behind it (another
    session's PATCH) or was replaced must not put bytes its caller never hashed into the CAS."""
    driver = FilesystemDriver(tmp_path)
    finishing = driver.writer("u/data", append=True)
    finishing.write(b"hashed by the finishing session")
    other = driver.writer("u/data", append=True)
    other.write(b" and more from another one")
    other.close()
    with pytest.raises(ObjectBusy):
        finishing.commit_to("cas/blob")
    with pytest.raises(PathNotFound):
        driver.stat("cas/blob")
    assert driver.stat("u/data").size == len(b"hashed by the finishing session and more from another one")

    replaced = driver.writer("r/data", append=True)
    replaced.write(b"old")
    driver.delete("r/data")  # a cancel, then a new upload file at the same key
    driver.writer("r/data", append=True).close()
    with pytest.raises(ObjectBusy):
        replaced.commit_to("cas/other")
    with pytest.raises(PathNotFound):
        driver.stat("cas/other")


def test_start_writeback_reaches_the_kernel(tmp_path: Path) -> None:
    """The writers' early writeback (sync_file_range) is bound right: the kernel takes the call."""
    with open(tmp_path / "f", "wb") as f:
        f.write(os.urandom(WRITEBACK_STEP))
        f.flush()
        assert start_writeback(f.fileno(), 0, WRITEBACK_STEP)
    assert not start_writeback(-1, 0, WRITEBACK_STEP)


def _write_in_pieces(writer: FileWriter, data: bytes) -> None:
    for start in range(0, len(data), MiB):  # as a request body's batches arrive
        writer.write(data[start:start + MiB])


def test_each_step_of_an_upload_is_started_to_disk_by_the_patch_that_completes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The early writeback counts steps from the file's start, so PATCHes smaller than a step
    (5 MiB here) still have every step started while the upload goes on, not all at its fsync."""
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(fswriters, "start_writeback",
                        lambda fd, offset, length: started.append((offset, offset + length)) or True)
    driver = FilesystemDriver(tmp_path)
    for _ in range(7):
        patch = driver.writer("uploads/u/data", append=True)
        _write_in_pieces(patch, os.urandom(5 * MiB))
        patch.close()
    step = WRITEBACK_STEP
    assert started == [(0, step), (step, 2 * step), (2 * step, 3 * step), (3 * step, 4 * step)]  # of 35 MiB
