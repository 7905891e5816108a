"""What interrupted writes leave behind, on every driver: tags that do not resolve are never
listed, and the temp debris killed writers leave is swept once it is old enough, never sooner."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest

from ocispec.digest import Digest
from storage import paths
from storage.driver.base import StorageDriver
from storage.driver.fs import TEMP_PREFIX
from storage.errors import TagUnknown
from storage.repository import TEMP_MIN_AGE, Storage
from tests.support.images import simple_image

from .test_driver_contract import open_uploads
from .test_stores import push_image

MiB = 1024 * 1024
DAY = 86400.0


def test_tags_that_do_not_resolve_are_neither_listed_nor_resolved(driver: StorageDriver, driver_kind: str) -> None:
    storage = Storage(driver)
    repo = storage.repository("h/app")
    digest = push_image(storage, "h/app", simple_image("resolves"), "good")
    # A tag whose manifest is gone (a delete racing a tag push), and a link that holds no digest.
    driver.put(paths.tag_current_link("h/app", "dangling"), str(Digest.of(b"never pushed")).encode())
    driver.put(paths.tag_current_link("h/app", "corrupt"), b"not a digest")
    if driver_kind == "fs":
        # Killed while writing the link: the directories and the temp file, no link.
        current = driver.root / paths.tag("h/app", "killed") / "current"  # type: ignore[attr-defined]
        current.mkdir(parents=True)
        (current / f"{TEMP_PREFIX}{uuid.uuid4().hex}").write_bytes(b"sha256:12")
    assert repo.tags.list() == ["good"]
    assert repo.tags.resolved() == {"good": digest}
    assert repo.tags.tags_of(digest) == ["good"]
    for tag in ("dangling", "corrupt", "killed"):
        with pytest.raises(TagUnknown):
            repo.tags.resolve(tag)
    repo.manifests.delete(digest)
    assert repo.tags.list() == []


def _stale_multipart_copy(driver: Any, key: str) -> str:
    """A server-side copy killed before it completed: a multipart upload nothing names."""
    resp = driver.bucket.client.create_multipart_upload(Bucket=driver.bucket.name, Key=driver.bucket.full_key(key))
    return str(resp["UploadId"])


def test_sweep_removes_old_temp_debris_anywhere_but_not_young_or_upload_areas(driver: StorageDriver,
                                                                              driver_kind: str) -> None:
    storage = Storage(driver)
    push_image(storage, "h/app", simple_image("sweep"), "v1")
    upload = storage.uploads.start("h/app")
    storage.uploads.append("h/app", upload.id, [os.urandom(6 * MiB)])  # on S3 a resumable multipart upload
    blob_key = paths.blob_data(Digest.of(b"being copied"))
    if driver_kind == "fs":
        root = driver.root  # type: ignore[attr-defined]
        stale = [root / paths.tag("h/app", "killed") / "current" / f"{TEMP_PREFIX}a",
                 root / paths.BLOBS / f"{TEMP_PREFIX}b", root / f"{TEMP_PREFIX}probe-c"]
        young = root / paths.manifests("h/app") / f"{TEMP_PREFIX}d"
        for path in [*stale, young]:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"partial")
        old = time.time() - 8 * DAY
        for path in stale:
            os.utime(path, (old, old))
        assert storage.sweep_temp(7 * DAY) == len(stale)
        assert not any(path.exists() for path in stale)
        assert young.exists()
        # Young debris goes only once it is older than the age asked for, and never younger than
        # TEMP_MIN_AGE, however small the age asked for.
        assert storage.sweep_temp(0) == 0 and young.exists()
        assert storage.sweep_temp(0, now=time.time() + TEMP_MIN_AGE + 60) == 1 and not young.exists()
    else:
        from storage.driver.s3.hygiene import probe_key

        s3: Any = driver
        upload_id = _stale_multipart_copy(s3, blob_key)
        # Another tool's unfinished uploads in the same bucket (and below the same prefix): not ours.
        foreign = {_stale_multipart_copy(s3, key) for key in ("backups/db.tar", "db.tar")}
        # A start-up check killed between writing and deleting its probe object.
        s3.bucket.client.put_object(Bucket=s3.bucket.name, Key=probe_key(s3.bucket, "killed"), Body=b"")
        if driver_kind != "s3-moto":  # moto reports every upload as initiated in 2010
            assert storage.sweep_temp(0) == 0  # everything is younger than TEMP_MIN_AGE
        assert storage.sweep_temp(0, now=time.time() + TEMP_MIN_AGE + 60) == 2
        assert [u["UploadId"] for u in open_uploads(driver) if u["UploadId"] == upload_id] == []
        left = {u["UploadId"] for u in open_uploads(driver)}
        assert foreign <= left, "another tool's uploads were aborted"
        for u in open_uploads(driver):
            if u["UploadId"] in foreign:
                s3.bucket.client.abort_multipart_upload(Bucket=s3.bucket.name, Key=u["Key"], UploadId=u["UploadId"])
        assert len(open_uploads(driver)) == 1  # the registry upload, spared: its own purge owns it
        listed = s3.bucket.client.list_objects_v2(Bucket=s3.bucket.name, Prefix=probe_key(s3.bucket, ""))
        assert listed.get("KeyCount", 0) == 0
        driver.check()
    # Nothing a reader sees changed, and the upload can still finish.
    assert storage.repository("h/app").tags.list() == ["v1"]
    assert storage.uploads.status("h/app", upload.id).size == 6 * MiB


def test_purge_uploads_also_sweeps_temp_debris(driver: StorageDriver, driver_kind: str) -> None:
    storage = Storage(driver)
    upload = storage.uploads.start("h/old")
    later = time.time() + 8 * DAY
    if driver_kind == "fs":
        debris = driver.root / paths.BLOBS / f"{TEMP_PREFIX}e"  # type: ignore[attr-defined]
        debris.parent.mkdir(parents=True, exist_ok=True)
        debris.write_bytes(b"partial")
    else:
        _stale_multipart_copy(driver, paths.blob_data(Digest.of(b"copy")))
    assert storage.uploads.purge(["h/old"], 7 * DAY, now=time.time()) == 0
    assert storage.purge_uploads(7 * DAY, now=later) == 1
    with pytest.raises(Exception, match="upload unknown"):
        storage.uploads.status("h/old", upload.id)
    if driver_kind == "fs":
        assert not debris.exists()
    else:
        assert open_uploads(driver) == []


def test_a_multipart_upload_a_killed_patch_began_goes_once_its_upload_is_gone(driver: StorageDriver,
                                                                            driver_replica: StorageDriver) -> None:
    """A PATCH killed after it sent a part (S3) began a multipart upload that no upload state
    names. The sweep spares it while its upload exists (the upload's purge owns it); once the
    client resumed elsewhere and completed (its state and data key gone in one batch), nothing
    else would ever remove it, and the sweep does."""
    storage, other = Storage(driver), Storage(driver_replica)
    external = driver.capabilities.external_writer_state
    upload = storage.uploads.start("h/killed")
    killed = storage.uploads.open_session("h/killed", upload.id)
    first = os.urandom(6 * MiB)
    killed.write(first)  # on S3 (5 MiB test parts) a part is sent; the session never saves its state
    if not external:
        killed.close()  # on disk what a killed PATCH wrote is in the file, as after a real kill
    del killed
    offset = other.uploads.status("h/killed", upload.id).size  # where the client resumes
    rest = os.urandom(1000)
    other.uploads.append("h/killed", upload.id, [rest], expected_offset=offset)
    later = time.time() + TEMP_MIN_AGE + 60
    assert len(open_uploads(driver)) == (1 if external else 0)
    assert storage.sweep_temp(0, now=later) == 0  # its upload is there: spared
    blob = (b"" if external else first) + rest
    assert other.uploads.complete("h/killed", upload.id, Digest.of(blob)).size == len(blob)
    assert storage.sweep_temp(0, now=later) == (1 if external else 0)
    assert open_uploads(driver) == []
    assert driver.get(paths.blob_data(Digest.of(blob))) == blob
