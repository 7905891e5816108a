"""The headers of the API's answers, and the URLs they carry, that handlers and the error table
(registry.errors) both build: one definition each, in a module that imports no other registry
module, so both can use it.
"""

from __future__ import annotations

from ocispec.digest import Digest

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


def blob_url(name: str, digest: Digest) -> str:
    return f"/v2/{name}/blobs/{digest}"


def upload_url(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def manifest_url(name: str, reference: str) -> str:
    return f"/v2/{name}/manifests/{reference}"


def range_header(size: int) -> str:
    """The `Range` header of an upload: the bytes received so far, inclusive (0-0 when none)."""
    return f"0-{max(size - 1, 0)}"


def upload_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    """Where an upload stands, as every answer about it says (202, 204, and a refused chunk's 416)."""
    return {"Location": upload_url(name, upload_id), "Docker-Upload-UUID": upload_id, "Range": range_header(size)}
