"""A repository's views (`Repository.blobs`, `Repository.uploads`) are the access check: what
another repository pushed or started is unknown through them, on every driver."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from ocispec.digest import Digest
from storage import BlobUnknown, Storage, UploadUnknown, paths
from storage.driver.base import StorageDriver

from .test_stores import push_blob


def test_a_blob_is_read_only_through_a_repository_that_links_it(
        driver: StorageDriver, store_factory: Callable[..., StorageDriver]) -> None:
    storage = Storage(driver)
    data = b"pushed to a only"
    digest = push_blob(storage, "views/a", data)
    # The same store through a driver that hands out URLs, where the driver can (S3 with redirect).
    redirecting = Storage(store_factory(redirect=True))
    for store in (storage, redirecting):
        owner, other = store.repository("views/a"), store.repository("views/b")
        with owner.blobs.open(digest, 7) as stream:
            assert stream.read() == data[7:]
        assert owner.blobs.stat(digest).size == len(data)
        url = owner.blobs.url_for(digest)
        assert (url is not None) == store.capabilities.presigned_urls
        # The bytes are in the CAS, but b has no link: every way to them refuses, in any order.
        reads: list[tuple[Callable[..., object], tuple[object, ...]]] = [
            (other.blobs.open, (digest,)), (other.blobs.stat, (digest,)), (other.blobs.open, (digest, 3))]
        if store.capabilities.presigned_urls:
            reads.append((other.blobs.url_for, (digest,)))
        else:
            assert other.blobs.url_for(digest) is None  # no URLs at all: nothing to hand out
        for read, args in reads:
            with pytest.raises(BlobUnknown):
                read(*args)
    storage.repository("views/a").blobs.unlink(digest)
    for store in (storage, redirecting):
        with pytest.raises(BlobUnknown):
            store.repository("views/a").blobs.open(digest)
        if store.capabilities.presigned_urls:
            with pytest.raises(BlobUnknown):
                store.repository("views/a").blobs.url_for(digest)


def test_an_upload_is_known_only_to_the_repository_that_started_it(driver: StorageDriver) -> None:
    storage = Storage(driver)
    owner, other = storage.repository("views/up-a"), storage.repository("views/up-b")
    data = b"bytes of an upload started in a"
    upload = owner.uploads.start()
    owner.uploads.append(upload.id, [data[:10]])
    digest = Digest.of(data)
    for step in (lambda: other.uploads.status(upload.id), lambda: other.uploads.open_session(upload.id, 10),
                 lambda: other.uploads.append(upload.id, [data[10:]]),
                 lambda: other.uploads.complete(upload.id, digest), lambda: other.uploads.cancel(upload.id)):
        with pytest.raises(UploadUnknown):
            step()
    # Nothing of it changed, nothing became visible in b, and it finishes where it started.
    assert owner.uploads.status(upload.id).size == 10
    owner.uploads.append(upload.id, [data[10:]], expected_offset=10)
    assert owner.uploads.complete(upload.id, digest).size == len(data)
    assert owner.blobs.stat(digest).size == len(data)
    with pytest.raises(BlobUnknown):
        other.blobs.stat(digest)


def test_an_upload_state_naming_another_repository_is_unknown(driver: StorageDriver) -> None:
    """A tree copied by hand: the state below b says the upload is a's; b does not adopt it."""
    storage = Storage(driver)
    upload = storage.repository("views/copy-a").uploads.start()
    state = {"repository": "views/copy-a", "startedat": upload.started_at}
    driver.put(paths.upload_state("views/copy-b", upload.id), json.dumps(state).encode())
    with pytest.raises(UploadUnknown):
        storage.repository("views/copy-b").uploads.status(upload.id)
    assert storage.repository("views/copy-a").uploads.status(upload.id).size == 0
