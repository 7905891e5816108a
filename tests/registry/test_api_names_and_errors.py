"""Names that must be refused, paths that must not escape the storage root, and the error JSON
every failure carries."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.support.servers import RunningServer, start_cargobay

from .helpers import assert_error, sha256


def raw_request(server: RunningServer, request_line: str) -> tuple[int, bytes]:
    """Send a request line exactly as written (no client-side path normalisation)."""
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        headers = f"Host: {server.hostport}\r\nContent-Length: 0\r\nConnection: close\r\n"
        s.sendall(f"{request_line}\r\n{headers}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("name", ["UPPER", "a//b", "-a", "a/_layers", "a/" + "b" * 255, "a%20b", "a.-b"])
def test_invalid_names_are_name_invalid(client: httpx.Client, name: str) -> None:
    assert_error(client.get(f"/v2/{name}/tags/list"), 400, "NAME_INVALID")
    assert_error(client.post(f"/v2/{name}/blobs/uploads/"), 400, "NAME_INVALID")


@pytest.mark.parametrize("path", [
    "/v2/../../../etc/manifests/latest",
    "/v2/a/../../../../etc/blobs/uploads/",
    "/v2/%2e%2e/%2e%2e/etc/tags/list",
    "/v2/a%2f..%2f..%2f..%2fetc/tags/list",
    "/v2/a/b/blobs/uploads/..%2f..%2f..%2f_layers",
])
def test_traversal_never_reaches_outside_the_root(server: RunningServer, path: str, tmp_path: Path) -> None:
    for method in ("GET", "POST", "PUT", "DELETE"):
        status, body = raw_request(server, f"{method} {path} HTTP/1.1")
        assert 400 <= status < 500, (method, path, status, body)
    assert server.root is not None
    outside = [p for p in server.root.parent.iterdir() if p.name not in {server.root.name} and p.suffix != ".log"
               and not p.name.startswith("config-")]
    assert outside == []


def test_unknown_route_and_method(client: httpx.Client) -> None:
    r = client.get("/v2/a/unknown/thing")
    assert r.status_code == 404 and r.json()["errors"]
    r = client.post("/v2/a/manifests/latest")
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"


@pytest.fixture(scope="module")
def readonly_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    srv = start_cargobay(tmp_path_factory.mktemp("nodelete"))
    yield srv
    srv.stop()


def test_deletes_disabled_by_default(readonly_server: RunningServer) -> None:
    with httpx.Client(base_url=readonly_server.url) as c:
        digest = sha256(b"kept")
        assert c.post("/v2/keep/blobs/uploads/", params={"digest": digest}, content=b"kept").status_code == 201
        assert_error(c.delete(f"/v2/keep/blobs/{digest}"), 405, "UNSUPPORTED")
        assert_error(c.delete(f"/v2/keep/manifests/{digest}"), 405, "UNSUPPORTED")
        assert_error(c.delete("/v2/keep/manifests/latest"), 405, "UNSUPPORTED")  # a tag as well
        assert c.get(f"/v2/keep/blobs/{digest}").content == b"kept"
        upload = c.post("/v2/keep/blobs/uploads/").headers["Location"]
        assert c.delete(upload).status_code == 204  # cancelling one's own upload removes no content


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/h/tags/list", "/v2/h/referrers/sha256:" + "a" * 64,
                                  "/v2/h/blobs/uploads/00000000-0000-0000-0000-000000000000"])
def test_head_on_get_routes_answers_like_get_without_a_body(client: httpx.Client, path: str) -> None:
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code < 500
    assert head.content == b""


def test_deeply_nested_manifest_is_invalid_not_a_crash(client: httpx.Client) -> None:
    r = client.put("/v2/nest/manifests/t", content=b"[" * 200_000,
                   headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert_error(r, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize("path", ["/v2/nl/manifests/latest%0A", "/v2/nl%0A/tags/list",
                                  "/v2/nl/blobs/sha256:" + "a" * 64 + "%0A"])
def test_trailing_newlines_are_not_valid_names_tags_or_digests(client: httpx.Client, path: str) -> None:
    r = client.put(path, content=b"{}") if "manifests" in path else client.get(path)
    assert r.status_code in (400, 404) and r.json()["errors"], r.text  # 404: no route takes a newline
    if "manifests" in path:
        assert "latest\n" not in client.get("/v2/nl/tags/list").text
