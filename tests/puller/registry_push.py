"""Pushing test images to any registry with the plain OCI API (POST + PUT upload, manifest PUT).

tests/support/images.push_blob loses Distribution's `_state` query parameter when it finishes an
upload with PUT, so the puller tests push with these instead.
"""

from __future__ import annotations

import httpx

from tests.support.images import Blob, Image, Index


def push_blob(client: httpx.Client, base_url: str, repo: str, blob: Blob) -> None:
    head = client.head(f"{base_url}/v2/{repo}/blobs/{blob.digest}")
    if head.status_code == 200:
        return
    r = client.post(f"{base_url}/v2/{repo}/blobs/uploads/", params={"digest": blob.digest}, content=blob.data,
                    headers={"Content-Type": "application/octet-stream"})
    if r.status_code == 202:
        location = httpx.URL(base_url).join(r.headers["Location"])
        location = location.copy_merge_params({"digest": blob.digest})
        r = client.put(location, content=blob.data, headers={"Content-Type": "application/octet-stream"})
    r.raise_for_status()


def push_manifest(client: httpx.Client, base_url: str, repo: str, reference: str, body: bytes, media_type: str) -> None:
    r = client.put(f"{base_url}/v2/{repo}/manifests/{reference}", content=body, headers={"Content-Type": media_type})
    r.raise_for_status()


def push_image(client: httpx.Client, base_url: str, repo: str, image: Image, tag: str | None = None) -> None:
    for blob in image.blobs():
        push_blob(client, base_url, repo, blob)
    push_manifest(client, base_url, repo, tag or image.digest, image.manifest, image.media_type)


def push_index(client: httpx.Client, base_url: str, repo: str, index: Index, tag: str | None = None) -> None:
    for image in index.images:
        push_image(client, base_url, repo, image)
    push_manifest(client, base_url, repo, tag or index.digest, index.manifest, index.media_type)
