"""Small assertions shared by the API tests."""

from __future__ import annotations

import hashlib

import httpx


def error_codes(response: httpx.Response) -> list[str]:
    """The OCI error codes of an error response (asserting the body is the OCI error JSON)."""
    body = response.json()
    assert isinstance(body.get("errors"), list) and body["errors"], body
    return [entry["code"] for entry in body["errors"]]


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    if response.request.method == "HEAD":
        assert response.content == b""  # HEAD carries the status and headers only
        return
    assert code in error_codes(response), response.text


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def upload(client: httpx.Client, repo: str, data: bytes, digest: str | None = None) -> str:
    digest = digest or sha256(data)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return digest
