"""The registry client's typed interface (`distclient.RegistryClient`), in process, against real
registries (Distribution and Cargobay): resolve, get a manifest, fetch a blob resuming from an
offset, push; a remote's error answer keeps its HTTP status and OCI codes; a caller's Cancelled
is never swallowed by the mirror fallback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from distclient import (
    Authenticator,
    Cancelled,
    ClientConfig,
    ClientError,
    Endpoint,
    HostConfig,
    NetworkConfig,
    NotFound,
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    VerificationError,
)
from ocispec.digest import Digest, SizeExceeded
from ocispec.manifest import Descriptor, ImageManifest
from ocispec.reference import parse_reference
from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import RunningServer

FAST = NetworkConfig(retries=1, backoff=0.01, connect_timeout=5, read_timeout=10)


class MemorySink:
    """A BlobSink in memory that may start with a prefix of the blob (a resumed download)."""

    def __init__(self, desc: Descriptor, prefix: bytes = b"") -> None:
        self.desc, self.data, self.resumed_from, self.committed = desc, bytearray(prefix), len(prefix), False

    @property
    def offset(self) -> int:
        return len(self.data)

    def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > self.desc.size:
            raise SizeExceeded("too many bytes")
        self.data += data

    def reset(self) -> None:
        self.data.clear()

    def commit(self) -> None:
        if "sha256:" + hashlib.sha256(self.data).hexdigest() != str(self.desc.digest):
            self.reset()
            raise VerificationError("digest mismatch")
        self.committed = True


def client_for(config: ClientConfig, plain_http: bool = True) -> RegistryClient:
    client = RegistryClient(config, plain_http=plain_http)
    client.auth = Authenticator(client.transport.token_http, lookup=lambda host: None)  # no stored credentials
    return client


def test_resolve_get_manifest_and_fetch_a_blob_resuming_from_an_offset(registry: RunningServer, http: httpx.Client,
                                                                       repo: str) -> None:
    image = im.simple_image("client-fetch")
    push_image(http, registry.url, repo, image, "v1")
    client = client_for(ClientConfig(network=FAST))
    ref = parse_reference(f"{registry.hostport}/{repo}:v1")

    assert client.head_manifest(ref) == Digest.parse(image.digest)
    fetched = client.get_manifest(ref)
    assert fetched.raw == image.manifest and str(fetched.digest) == image.digest
    assert isinstance(fetched.manifest, ImageManifest)
    layer = fetched.manifest.layers[0]
    blob = next(b.data for b in image.blobs() if b.digest == str(layer.digest))
    half = layer.size // 2
    sink = MemorySink(layer, blob[:half])
    seen: list[int] = []
    client.fetch_blob(ref, layer, sink, seen.append, prefer=fetched.endpoint)
    assert sink.committed and bytes(sink.data) == blob
    assert seen[0] == half and seen[-1] == layer.size  # it went on from the offset, not from 0


def test_a_registry_error_answer_keeps_its_status_and_oci_codes(registry: RunningServer, repo: str) -> None:
    client = client_for(ClientConfig(network=FAST))
    ref = parse_reference(f"{registry.hostport}/{repo}:missing")
    with pytest.raises(RegistryNotFound) as caught:
        client.get_manifest(ref)
    error = caught.value
    assert isinstance(error, NotFound) and isinstance(error, RegistryError) and error.exit_code == 3
    assert error.status == 404 and error.codes in (("MANIFEST_UNKNOWN",), ("NAME_UNKNOWN",))
    assert error.detail["status"] == 404 and "not found" in error.message

    ep = client.config.host_endpoint(ref.domain, plain_http=True)
    with pytest.raises(RegistryError) as refused:
        client.put_manifest(ref, ep, "bad", im.OCI_MANIFEST, b"{not json")
    assert refused.value.status == 400 and "MANIFEST_INVALID" in refused.value.codes
    assert not isinstance(refused.value, NotFound) and refused.value.exit_code == 1


def test_push_a_blob_and_a_manifest(registry: RunningServer, repo: str, tmp_path: Path) -> None:
    image = im.simple_image("client-push", layer_count=1)
    client = client_for(ClientConfig(network=FAST))
    ref = parse_reference(f"{registry.hostport}/{repo}:pushed")
    ep = client.config.host_endpoint(ref.domain, plain_http=True)
    for blob in image.blobs():
        desc = Descriptor(blob.media_type, Digest.parse(blob.digest), blob.size)
        assert not client.blob_exists(ref, ep, desc)
        path = tmp_path / blob.digest.split(":")[1]
        path.write_bytes(blob.data)
        with open(path, "rb") as body:
            client.upload_blob(ref, ep, desc, body, len(blob.data))
        assert client.blob_exists(ref, ep, desc)
    client.put_manifest(ref, ep, "pushed", im.OCI_MANIFEST, image.manifest)
    assert str(client.get_manifest(ref).digest) == image.digest


def test_a_cancelled_download_on_a_mirror_is_not_tried_on_the_next_endpoint(registry: RunningServer,
                                                                            http: httpx.Client, repo: str) -> None:
    image = im.simple_image("client-cancel", layer_count=1)
    push_image(http, registry.url, repo, image, "v1")
    # The host itself does not answer (port 1): trying it after the mirror would end in Unreachable.
    host = "127.0.0.1:1"
    config = ClientConfig({host: HostConfig(mirrors=(Endpoint(registry.url, host),), insecure=True)}, FAST)
    client = client_for(config, plain_http=False)
    ref = parse_reference(f"{host}/{repo}:v1")
    fetched = client.get_manifest(ref)
    assert fetched.endpoint.is_mirror
    assert isinstance(fetched.manifest, ImageManifest)
    layer = fetched.manifest.layers[0]

    def cancel(done: int) -> None:
        raise Cancelled()

    with pytest.raises(Cancelled) as caught:
        client.fetch_blob(ref, layer, MemorySink(layer), cancel)
    assert isinstance(caught.value, ClientError)
