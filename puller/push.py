"""`puller push`: send a stored image to a registry with the plain OCI API.

Blobs the registry already has (HEAD) are skipped; the others are uploaded in one piece
(`POST …/blobs/uploads/` then `PUT <Location>?digest=`), streamed from the store; the manifest goes
last, byte for byte as stored, so its digest does not change. Pushes go to the host itself, never to
a mirror, and ask for `pull,push` tokens.
"""

from __future__ import annotations

import os
import time

from distclient import Endpoint, RegistryClient
from ocispec.digest import Digest
from ocispec.manifest import Descriptor
from ocispec.reference import Reference

from .errors import PullError
from .progress import BlobFields, BlobStartFields, Emit, Event
from .store import Store


def _upload(client: RegistryClient, store: Store, ep: Endpoint, dest: Reference, desc: Descriptor) -> None:
    with store.open_blob(desc.digest) as blob:
        client.upload_blob(dest, ep, desc, blob, os.fstat(blob.fileno()).st_size)


def push(client: RegistryClient, store: Store, source: str, dest: Reference, emit: Emit = lambda e: None) -> Digest:
    """Push stored image `source` to `dest` (tagged with dest's tag, or by digest); returns the
    manifest digest."""
    started = time.monotonic()
    with store.using():
        record, manifest, _ = store.image(source)
        if dest.digest and dest.digest != record.digest:
            raise PullError(f"{dest} names another digest than the stored {record.digest}")
        # The first question picks the endpoint (a loopback host may answer on plain HTTP only).
        ep, first_exists = client.on_host(dest.domain, lambda e: (e, client.blob_exists(dest, e, manifest.config)))
        uploaded = 0
        for desc in manifest.blobs():
            event = BlobFields(digest=str(desc.digest), size=desc.size, role="layer")
            exists = first_exists if desc is manifest.config else client.blob_exists(dest, ep, desc)
            if exists:
                emit(Event("blob-exists", event))
                continue
            emit(Event("blob-start", BlobStartFields(**event, offset=0)))
            _upload(client, store, ep, dest, desc)
            uploaded += desc.size
            emit(Event("blob-done", event))
        identifier = dest.tag if dest.tag and not dest.digest else str(record.digest)
        client.put_manifest(dest, ep, identifier, manifest.media_type, manifest.raw)
    emit(Event("pushed", {"reference": str(dest), "digest": str(record.digest), "uploaded": uploaded,
                          "elapsed": round(time.monotonic() - started, 3)}))
    return record.digest
