"""`puller push`: send a stored image to a registry with the plain OCI API.

Blobs the registry already has (HEAD) are skipped; the others are uploaded in one piece
(`POST …/blobs/uploads/` then `PUT <Location>?digest=`), streamed from the store; the manifest goes
last, byte for byte as stored, so its digest does not change. Pushes go to the host itself, never to
a mirror, and ask for `pull,push` tokens.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urljoin

from ocispec.digest import Digest
from ocispec.manifest import Descriptor
from ocispec.reference import Reference

from .client import RegistryClient
from .config import Endpoint
from .errors import NotFound, PullError
from .progress import Emit, Event
from .store import Store


def _exists(client: RegistryClient, ref: Reference, ep: Endpoint, desc: Descriptor) -> bool:
    def once() -> bool:
        try:
            response = client.request(ref, ep, "HEAD", f"/blobs/{desc.digest}", actions="pull,push")
        except NotFound:
            return False
        return response.headers.get("Content-Length") in (None, str(desc.size))
    return client.transport.retrying(f"{ep.netloc}: blob {desc.digest}", once)


def _upload(client: RegistryClient, store: Store, ref: Reference, ep: Endpoint, desc: Descriptor) -> None:
    def once() -> None:
        started = client.request(ref, ep, "POST", "/blobs/uploads/", {"Content-Length": "0"}, body=b"",
                                 actions="pull,push")
        location = started.headers.get("Location")
        if not location:
            raise PullError(f"{ep.netloc}: upload started without a Location")
        url = urljoin(f"{ep.base}/v2/{ref.repository}/blobs/uploads/", location)
        url += ("&" if "?" in url else "?") + f"digest={desc.digest}"
        with store.open_blob(desc.digest) as blob:
            client.request(ref, ep, "PUT", url, {"Content-Type": "application/octet-stream",
                                                 "Content-Length": str(os.fstat(blob.fileno()).st_size)},
                           body=blob, actions="pull,push")
    client.transport.retrying(f"{ep.netloc}: upload of {desc.digest}", once)


def push(client: RegistryClient, store: Store, source: str, dest: Reference, emit: Emit = lambda e: None) -> Digest:
    """Push stored image `source` to `dest` (tagged with dest's tag, or by digest); returns the
    manifest digest."""
    started = time.monotonic()
    with store.using():
        record, manifest, _ = store.image(source)
        if dest.digest and dest.digest != record.digest:
            raise PullError(f"{dest} names another digest than the stored {record.digest}")
        # The first question picks the endpoint (a loopback host may answer on plain HTTP only).
        ep, first_exists = client.on_host(dest.domain, lambda e: (e, _exists(client, dest, e, manifest.config)))
        uploaded = 0
        for desc in manifest.blobs():
            event = {"digest": str(desc.digest), "size": desc.size, "role": "layer"}
            exists = first_exists if desc is manifest.config else _exists(client, dest, ep, desc)
            if exists:
                emit(Event("blob-exists", event))
                continue
            emit(Event("blob-start", {**event, "offset": 0}))
            _upload(client, store, dest, ep, desc)
            uploaded += desc.size
            emit(Event("blob-done", event))
        identifier = dest.tag if dest.tag and not dest.digest else str(record.digest)

        def put_manifest() -> None:
            client.request(dest, ep, "PUT", f"/manifests/{identifier}", {"Content-Type": manifest.media_type},
                           body=manifest.raw, actions="pull,push")
        client.transport.retrying(f"{ep.netloc}: manifest {dest}", put_manifest)
    emit(Event("pushed", {"reference": str(dest), "digest": str(record.digest), "uploaded": uploaded,
                          "elapsed": round(time.monotonic() - started, 3)}))
    return record.digest
