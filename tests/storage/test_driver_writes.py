"""The driver calls the cheap paths rest on, on every driver: `head` (an object, nothing else),
`opened` (a reader and its size), the atomic writer (nothing visible before `commit`, nothing left
after `cancel` or a crash but debris the temp sweep takes) and `commit_to` (an upload finished
where it belongs). Part size is 5 MiB on S3 here, so the large cases are multipart uploads."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import ObjectBusy, PathNotFound
from storage.driver import StorageDriver, fswriters
from storage.driver.base import AtomicWriter, FileWriter
from storage.driver.fs import FilesystemDriver
from storage.driver.fswriters import WRITEBACK_STEP, start_writeback
from tests.support.servers import REPO_ROOT

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


# -- what a written blob leaves in the page cache (files) -------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def cached_bytes(path: Path, offset: int = 0, length: int | None = None) -> int:
    """How many bytes of `path` in [offset, offset + length) the page cache holds (mincore(2) of a
    read-only map, which does not read anything in)."""
    size = path.stat().st_size
    page = mmap.PAGESIZE
    with open(path, "rb") as f:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            pages = (size + page - 1) // page
            vec = ctypes.create_string_buffer(pages)
            assert _libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            _libc.munmap(addr, size)
    first, last = offset // page, (size if length is None else offset + length) // page
    return sum(vec.raw[i] & 1 for i in range(first, min(last, pages))) * page


def _filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` is on (/proc/self/mountinfo: the deepest mount above it)."""
    best, kind = "", ""
    resolved = str(path.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        mount_point = fields.split()[4]
        if (resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")) \
                and len(mount_point) >= len(best):
            best, kind = mount_point, rest.split()[0]
    return kind


@pytest.fixture
def on_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a disk filesystem: the page cache of tmpfs (a /tmp on some systems) is the
    files themselves and cannot be dropped, so then one in the checkout's (ignored) artifacts."""
    if _filesystem_type(tmp_path) not in ("tmpfs", "ramfs"):
        yield tmp_path
        return
    scratch = REPO_ROOT / "tests-artifacts" / f"page-cache-{uuid.uuid4().hex}"
    scratch.mkdir(parents=True)
    try:
        assert _filesystem_type(scratch) not in ("tmpfs", "ramfs"), "no disk filesystem to write to"
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_in_pieces(writer: FileWriter | AtomicWriter, data: bytes) -> None:
    for start in range(0, len(data), MiB):  # as a request body's batches arrive
        writer.write(data[start:start + MiB])


def _written_out(path: Path) -> None:
    """Wait until what `path` holds is on disk, as the disk does by itself while an upload goes on."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _sha256(driver: StorageDriver, key: str) -> bytes:
    with driver.reader(key) as stream:
        return hashlib.sha256(stream.read()).digest()


def test_an_upload_in_patches_leaves_the_page_cache_two_steps_behind_the_writer(on_disk: Path) -> None:
    """A blob is written once and read by pulls later: the steps an upload wrote before the last
    two, once on disk, are not kept in the page cache, across the PATCHes of one upload too (each
    opens its own writer), and what lands in the CAS is every byte that was sent."""
    driver, step = FilesystemDriver(on_disk), WRITEBACK_STEP
    data = os.urandom(5 * step)
    upload = on_disk / "uploads/u/data"
    for n in range(5):
        patch = driver.writer("uploads/u/data", append=True)
        _write_in_pieces(patch, data[n * step:(n + 1) * step])
        if n < 4:
            patch.close()
            _written_out(upload)  # a disk that keeps up
    assert cached_bytes(upload, 0, 3 * step) == 0
    assert cached_bytes(upload, 3 * step) == 2 * step  # the step before the last, and the last
    patch.commit_to("cas/blob")
    assert _sha256(driver, "cas/blob") == hashlib.sha256(data).digest()


def test_a_monolithic_blob_leaves_the_page_cache_two_steps_behind_the_writer(on_disk: Path) -> None:
    driver, step = FilesystemDriver(on_disk), WRITEBACK_STEP
    data, small = os.urandom(6 * step), os.urandom(64 * 1024)
    writer = driver.atomic_writer("blobs/large")
    for n in range(6):
        _write_in_pieces(writer, data[n * step:(n + 1) * step])
        (temp,) = (on_disk / "blobs").glob(f"{fswriters.TEMP_PREFIX}*")
        _written_out(temp)  # a disk that keeps up
    assert cached_bytes(temp, 0, 4 * step) == 0
    writer.commit()
    assert _sha256(driver, "blobs/large") == hashlib.sha256(data).digest()
    config = driver.atomic_writer("blobs/small")  # a config, read at every pull: stays cached
    config.write(small)
    config.commit()
    assert cached_bytes(on_disk / "blobs/small") == len(small)


def test_each_step_of_an_upload_is_started_to_disk_by_the_patch_that_completes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The early writeback counts steps from the file's start, so PATCHes smaller than a step
    still have every step started while the upload goes on, not all at its fsync."""
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(fswriters, "start_writeback",
                        lambda fd, offset, length: started.append((offset, offset + length)) or True)
    driver, step = FilesystemDriver(tmp_path), WRITEBACK_STEP
    patch_size = step - MiB
    for _ in range(7):
        patch = driver.writer("uploads/u/data", append=True)
        _write_in_pieces(patch, os.urandom(patch_size))
        patch.close()
    assert started == [(n * step, (n + 1) * step) for n in range(7 * patch_size // step)]
    assert len(started) >= 4
