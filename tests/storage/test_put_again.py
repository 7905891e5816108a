"""A put of the bytes a key already holds: on every driver the key reads the same and its
modified time moves (a re-pushed tag's and a touched manifest's `updated` rely on it), and on
disk it rewrites nothing (the spared fsyncs are half of a manifest push)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from storage.driver.base import StorageDriver
from storage.driver.fs import FilesystemDriver


def _aged(driver: StorageDriver, key: str) -> None:
    """Make the object look written a minute ago (only the fs driver lets us; S3 objects age by
    waiting, so there the test waits past its clock's one-second resolution)."""
    if isinstance(driver, FilesystemDriver):
        path = Path(driver.root, key)
        os.utime(path, (time.time() - 60, time.time() - 60))
    else:
        time.sleep(1.1)


def test_a_put_of_the_same_bytes_moves_the_modified_time(driver: StorageDriver) -> None:
    driver.put("links/a", b"sha256:" + b"a" * 64)
    _aged(driver, "links/a")
    before = driver.stat("links/a").modified
    driver.put("links/a", b"sha256:" + b"a" * 64)
    assert driver.stat("links/a").modified > before
    assert driver.get("links/a") == b"sha256:" + b"a" * 64


def test_a_put_of_other_bytes_of_the_same_size_replaces_them(driver: StorageDriver) -> None:
    driver.put("links/b", b"sha256:" + b"a" * 64)
    driver.put("links/b", b"sha256:" + b"b" * 64)
    assert driver.get("links/b") == b"sha256:" + b"b" * 64
    driver.put("links/b", b"sha256:" + b"b" * 63)  # a prefix of what is there is not the same bytes
    assert driver.get("links/b") == b"sha256:" + b"b" * 63


def test_on_disk_the_same_bytes_are_not_written_again(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    driver.put("tags/latest/link", b"sha256:" + b"c" * 64)
    inode = os.stat(tmp_path / "tags/latest/link").st_ino
    driver.put("tags/latest/link", b"sha256:" + b"c" * 64)
    assert os.stat(tmp_path / "tags/latest/link").st_ino == inode  # no temp file renamed over it
    driver.put("tags/latest/link", b"sha256:" + b"d" * 64)
    assert os.stat(tmp_path / "tags/latest/link").st_ino != inode
    assert [p.name for p in (tmp_path / "tags/latest").iterdir()] == ["link"]  # no temp file left
