"""The scrub on every driver: a clean store is clean; a byte flipped in a stored object and a blob
gone from the store are found, repair removes only the corrupt blob and the links to what is gone,
and a re-push of the image makes the store whole again."""

from __future__ import annotations

import os
import time
from typing import Any

from ocispec.digest import Digest
from storage import paths
from storage.check import scrub
from storage.driver.base import StorageDriver
from storage.manifests import CACHED_MANIFEST_RULES, STRICT
from storage.repository import Storage
from tests.support.images import build_index, simple_image

from .test_stores import push_blob, push_image

MiB = 1024 * 1024


def _flip_a_byte(driver: Any, driver_kind: str, digest: Digest) -> None:
    """Bit rot, as the backend would have it: one byte of the stored object changed in place."""
    key = paths.blob_data(digest)
    if driver_kind == "fs":
        with open(driver.root / key, "r+b") as f:
            first = f.read(1)
            f.seek(0)
            f.write(bytes([first[0] ^ 0xFF]))
        return
    data = bytearray(driver.get(key))
    data[0] ^= 0xFF
    driver.bucket.client.put_object(Bucket=driver.bucket.name, Key=driver.bucket.full_key(key), Body=bytes(data))


def _lines(report: Any) -> list[str]:
    return sorted(str(finding) for finding in report.findings)


def test_a_clean_store_is_clean(driver: StorageDriver) -> None:
    storage = Storage(driver)
    amd, arm = simple_image("clean-amd"), simple_image("clean-arm", platform="linux/arm64")
    push_image(storage, "k/app", amd, "amd")
    push_image(storage, "k/app", arm)
    index = build_index([amd, arm])
    storage.repository("k/app").manifests.put(index.manifest, index.media_type, tags=("multi",))
    push_blob(storage, "k/other", b"an upload no manifest names yet")
    storage.uploads.append("k/app", storage.uploads.start("k/app").id, [os.urandom(6 * MiB)])  # in progress

    report = scrub(storage, now=time.time() + 7200)
    assert report.findings == []
    assert report.clean
    assert (report.blobs, report.manifests, report.tags) == (10, 3, 2)  # 2 configs, 4 layers, 3 manifests, the upload
    assert "clean" in report.summary()


def test_corrupt_and_missing_blobs_are_found_and_repair_removes_only_those(driver: StorageDriver,
                                                                           driver_kind: str) -> None:
    storage = Storage(driver)
    rotten, partial = simple_image("rotten"), simple_image("partial")
    rotten_digest = push_image(storage, "k/app", rotten, "v1")
    partial_digest = push_image(storage, "k/app", partial, "v2")
    stray = push_blob(storage, "k/other", b"uploaded, never named by a manifest")
    bad_layer, lost_layer = Digest.parse(rotten.layers[0].digest), Digest.parse(partial.layers[1].digest)
    _flip_a_byte(driver, driver_kind, bad_layer)
    _flip_a_byte(driver, driver_kind, stray)
    driver.delete(paths.blob_dir(lost_layer))

    found = scrub(storage)
    assert not found.clean
    assert _lines(found) == sorted([
        f"corrupt blob {bad_layer}: its {len(rotten.layers[0].data)} stored bytes hash to "
        f"{Digest.of(_read(driver, bad_layer))}",
        f"corrupt blob {stray}: its {len(b'uploaded, never named by a manifest')} stored bytes hash to "
        f"{Digest.of(_read(driver, stray))}",
        f"corrupt blob {bad_layer} in k/app: layers[0] of manifest {rotten_digest}: "
        "its stored bytes are not its digest",
        f"missing blob {lost_layer} in k/app: the repository links it, the store does not hold it",
        f"missing blob {lost_layer} in k/app: layers[1] of manifest {partial_digest}: not in the store",
    ])
    assert storage.blobs.exists(bad_layer) and storage.blobs.exists(stray)  # nothing removed without repair

    repaired = scrub(storage, repair=True, grace=0, now=time.time() + 60)
    assert sorted(repaired.repaired) == sorted([
        f"removed the link of k/app to corrupt blob {bad_layer}",
        f"removed the link of k/other to corrupt blob {stray}",
        f"removed the link of k/app to missing blob {lost_layer}",
        f"removed corrupt blob {bad_layer}",
        f"removed corrupt blob {stray}",
    ])
    assert not storage.blobs.exists(bad_layer) and not storage.blobs.exists(stray)
    # Everything else is as it was: both manifests and their tags, every other blob and link.
    app = storage.repository("k/app")
    assert app.manifests.get(rotten_digest).raw == rotten.manifest
    assert app.manifests.get(partial_digest).raw == partial.manifest
    assert app.tags.resolved() == {"v1": rotten_digest, "v2": partial_digest}
    for blob in (*rotten.blobs(), *partial.blobs()):
        digest = Digest.parse(blob.digest)
        if digest not in (bad_layer, lost_layer):
            with app.blobs.open(digest) as stream:
                assert stream.read() == blob.data

    # The manifests still name what is gone: reported (nothing invented) until it is pushed again.
    after = scrub(storage)
    assert _lines(after) == sorted([
        f"missing blob {bad_layer} in k/app: layers[0] of manifest {rotten_digest}: not in the store",
        f"missing blob {lost_layer} in k/app: layers[1] of manifest {partial_digest}: not in the store",
    ])
    push_image(storage, "k/app", rotten, "v1")
    push_image(storage, "k/app", partial, "v2")
    healed = scrub(storage)
    assert healed.clean, _lines(healed)


def _read(driver: StorageDriver, digest: Digest) -> bytes:
    return driver.get(paths.blob_data(digest))


def test_dangling_tags_are_reported_and_repaired_only_once_old(driver: StorageDriver) -> None:
    storage = Storage(driver)
    kept = push_image(storage, "k/tags", simple_image("tagged"), "good")
    ghost = Digest.of(b"never pushed")
    driver.put(paths.tag_current_link("k/tags", "ghost"), str(ghost).encode())

    assert _lines(scrub(storage)) == [
        f"dangling tag {ghost} in k/tags: tag ghost names a manifest the repository does not have"]
    young = scrub(storage, repair=True)  # the link is younger than the grace: a push may be writing it
    assert young.repaired == [] and driver.get(paths.tag_current_link("k/tags", "ghost"))
    old = scrub(storage, repair=True, now=time.time() + 7200)
    assert old.repaired == [f"removed tag k/tags:ghost, which named missing manifest {ghost}"]
    assert scrub(storage).clean
    assert storage.repository("k/tags").tags.resolved() == {"good": kept}


def test_multipart_uploads_no_upload_state_names_are_reported(driver: StorageDriver, driver_kind: str) -> None:
    storage = Storage(driver)
    push_image(storage, "k/mp", simple_image("multipart"), "v1")
    live = storage.uploads.start("k/mp")
    storage.uploads.append("k/mp", live.id, [os.urandom(6 * MiB)])  # a resumable multipart upload on S3
    later = time.time() + 7200
    if driver_kind == "fs":
        assert scrub(storage, now=later).clean  # files hold no invisible parts
        return
    client, bucket = driver.bucket.client, driver.bucket  # type: ignore[attr-defined]
    copy_key = paths.blob_data(Digest.of(b"a copy killed mid-way"))
    gone = storage.uploads.start("k/mp")
    upload_key = paths.upload_data("k/mp", gone.id)
    copy_id = client.create_multipart_upload(Bucket=bucket.name, Key=bucket.full_key(copy_key))["UploadId"]
    upload_id = client.create_multipart_upload(Bucket=bucket.name, Key=bucket.full_key(upload_key))["UploadId"]
    driver.delete(paths.upload_state("k/mp", gone.id))  # its state is gone, its parts are not

    if driver_kind != "s3-moto":  # moto dates every multipart upload 2010-11-10
        assert scrub(storage).clean  # begun just now: writes in flight
    report = scrub(storage, repair=True, now=later)
    assert sorted(f.subject for f in report.findings) == sorted([copy_key, upload_key])
    assert all(f.problem == "orphaned upload" for f in report.findings)
    assert {copy_id, upload_id} == {f.detail.split()[2] for f in report.findings}
    assert report.repaired == []  # report only: the purges abort them
    purges = {f.subject: f.detail.rsplit(" until ", 1)[1] for f in report.findings}
    assert purges == {copy_key: "the temp sweep aborts it", upload_key: "the upload purge aborts it"}
    uploads = client.list_multipart_uploads(Bucket=bucket.name, Prefix=bucket.prefix).get("Uploads", [])
    assert {u["UploadId"] for u in uploads} >= {copy_id, upload_id}


def test_a_cached_manifest_may_name_blobs_not_fetched_yet(driver: StorageDriver) -> None:
    storage = Storage(driver)
    image = simple_image("cached")
    cached = "upstream.example/library/app"
    digest = storage.repository(cached).manifests.put(image.manifest, image.media_type, tags=("v1",),
                                                      rules=CACHED_MANIFEST_RULES).digest
    strict = scrub(storage)
    assert _lines(strict) == sorted(f"missing blob {blob.digest} in {cached}: {where} of manifest {digest}: "
                                    "not in the store"
                                    for where, blob in (("config", image.config), ("layers[0]", image.layers[0]),
                                                        ("layers[1]", image.layers[1])))
    as_pushed = scrub(storage, rules=lambda name: CACHED_MANIFEST_RULES if name == cached else STRICT)
    assert as_pushed.clean
