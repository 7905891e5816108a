"""Garbage collection on every driver: what manifests need stays, the rest goes."""

from __future__ import annotations

import time

import pytest

from ocispec.digest import Digest
from storage.errors import BlobUnknown, ManifestBlobUnknown
from storage.gc import collect
from storage.manifests import ManifestRules
from storage.repository import Storage
from tests.support.images import build_index, simple_image

from .test_stores import push_blob, push_image


def test_gc_keeps_what_manifests_need_and_sweeps_the_rest(driver) -> None:  # type: ignore[no-untyped-def]
    storage = Storage(driver)
    kept = simple_image("kept")
    deleted = simple_image("deleted")
    push_image(storage, "g/app", kept, "v1")
    gone = push_image(storage, "g/app", deleted, "v2")
    orphan = push_blob(storage, "g/other", b"never referenced")
    storage.repository("g/app").manifests.delete(gone)

    young = collect(storage, grace_seconds=3600)
    assert young.swept == []  # everything is younger than the grace period

    dry = collect(storage, grace_seconds=0, dry_run=True, now=10**10)
    expected = {orphan, *(b.digest for b in deleted.blobs()), gone}
    assert {str(d) for d in dry.swept} == {str(d) for d in expected}
    assert storage.blobs.exists(orphan)

    report = collect(storage, grace_seconds=0, now=10**10)
    assert set(report.swept) == {Digest.parse(str(d)) for d in expected}
    assert report.unlinked >= 1
    for blob in kept.blobs():
        assert storage.repository("g/app").blobs.stat(Digest.parse(blob.digest)).size == blob.size
    assert storage.repository("g/app").manifests.get(Digest.parse(kept.digest)).raw == kept.manifest
    with pytest.raises(BlobUnknown):
        storage.repository("g/other").blobs.stat(orphan)


def test_gc_keeps_a_sparse_index_and_the_children_it_has(driver) -> None:  # type: ignore[no-untyped-def]
    storage = Storage(driver)
    present = simple_image("sparse-present")
    absent = simple_image("sparse-absent", platform="linux/arm64")
    push_image(storage, "g/sparse", present)
    index = build_index([present, absent])
    manifests = storage.repository("g/sparse").manifests
    with pytest.raises(ManifestBlobUnknown):
        manifests.put(index.manifest, index.media_type)
    digest = manifests.put(index.manifest, index.media_type, tags=("multi",),
                           rules=ManifestRules(allow_sparse_indexes=True)).digest

    report = collect(storage, grace_seconds=0, now=10**10)
    assert report.swept == []
    assert manifests.get(digest).raw == index.manifest
    assert storage.repository("g/sparse").tags.list() == ["multi"]
    for blob in present.blobs():
        assert storage.repository("g/sparse").blobs.stat(Digest.parse(blob.digest)).size == blob.size


def test_gc_keeps_a_blob_written_within_the_grace_period_whatever_the_store_rounds(driver) -> None:  # type: ignore[no-untyped-def]
    """S3 reports modification times to the whole second: a blob uploaded 1.99 s before a collection
    with a 2 s grace reads as up to 2.99 s old, and must still be kept (its manifest may be on its way)."""
    storage = Storage(driver)
    layer = b"a layer whose manifest is still on its way"
    written = time.time()
    pending = push_blob(storage, "g/pending", layer)
    report = collect(storage, grace_seconds=2, now=written + 1.99)
    assert pending not in report.swept
    assert storage.repository("g/pending").blobs.stat(pending).size == len(layer)
