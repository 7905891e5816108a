"""Blob upload and download against a real server: every flow of the distribution-spec and its
error paths."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from .helpers import assert_error, sha256, sha512, upload


def start(client: httpx.Client, repo: str) -> str:
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["Range"] == "0-0"
    assert r.headers["Docker-Upload-UUID"]
    assert int(r.headers["OCI-Chunk-Min-Length"]) >= 1
    return r.headers["Location"]


def test_version_check(client: httpx.Client) -> None:
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_monolithic_post_then_get_and_head(client: httpx.Client, repo: str) -> None:
    data = os.urandom(100_000)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/{repo}/blobs/{sha256(data)}"
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    got = client.get(f"/v2/{repo}/blobs/{sha256(data)}")
    assert got.status_code == 200 and got.content == data
    assert got.headers["Docker-Content-Digest"] == sha256(data)
    assert got.headers["Accept-Ranges"] == "bytes"
    head = client.head(f"/v2/{repo}/blobs/{sha256(data)}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(data))


def test_post_then_put_with_whole_body(client: httpx.Client, repo: str) -> None:
    data = b"whole body in the PUT"
    location = start(client, repo)
    r = client.put(location, params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_chunked_upload_with_status_and_final_chunk(client: httpx.Client, repo: str) -> None:
    data = os.urandom(300_000)
    location = start(client, repo)
    r = client.patch(location, content=data[:100_000], headers={"Content-Range": "0-99999",
                                                                "Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-99999"
    location = r.headers["Location"]
    r = client.patch(location, content=data[100_000:200_000], headers={"Content-Range": "100000-199999"})
    assert r.status_code == 202 and r.headers["Range"] == "0-199999"
    status = client.get(location)
    assert status.status_code == 204 and status.headers["Range"] == "0-199999"
    r = client.put(location, params={"digest": sha256(data)}, content=data[200_000:],
                   headers={"Content-Range": "200000-299999"})
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")  # the upload is gone once complete


def test_streamed_patch_without_content_range(client: httpx.Client, repo: str) -> None:
    data = os.urandom(2_500_000)

    def body():  # chunked transfer encoding, like docker's streamed uploads
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    location = start(client, repo)
    r = client.patch(location, content=body())
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
    r = client.put(r.headers["Location"], params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_out_of_order_chunk_is_416_with_current_range(client: httpx.Client, repo: str) -> None:
    location = start(client, repo)
    client.patch(location, content=b"a" * 10, headers={"Content-Range": "0-9"})
    r = client.patch(location, content=b"b" * 10, headers={"Content-Range": "20-29"})
    assert_error(r, 416, "RANGE_INVALID")
    assert r.headers["Range"] == "0-9"
    r = client.patch(location, content=b"b" * 10, headers={"Content-Range": "10-19"})
    assert r.status_code == 202 and r.headers["Range"] == "0-19"


def test_refused_chunk_says_where_the_upload_stands_on_patch_and_put(client: httpx.Client, repo: str) -> None:
    location = start(client, repo)
    upload_id = location.rsplit("/", 1)[1]
    assert client.patch(location, content=b"a" * 10, headers={"Content-Range": "0-9"}).status_code == 202
    for method in ("PATCH", "PUT"):
        r = client.request(method, location, params={"digest": sha256(b"a" * 20)}, content=b"b" * 10,
                           headers={"Content-Range": "20-29"})
        assert_error(r, 416, "RANGE_INVALID")
        assert (r.headers["Range"], r.headers["Location"], r.headers["Docker-Upload-UUID"]) == (
            "0-9", location, upload_id), method
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    r = client.put(location, params={"digest": sha256(b"a" * 20)}, content=b"a" * 10,
                   headers={"Content-Range": "10-19"})
    assert r.status_code == 201, r.text  # nothing of the refused chunks was kept


def test_malformed_content_range(client: httpx.Client, repo: str) -> None:
    location = start(client, repo)
    assert client.patch(location, content=b"abc", headers={"Content-Range": "zero-two"}).status_code == 416
    assert client.patch(location, content=b"abc", headers={"Content-Range": "0-9"}).status_code == 416


def test_wrong_digest_stores_nothing(client: httpx.Client, repo: str, data_root: Path) -> None:
    data = b"the real bytes"
    claimed = sha256(b"other bytes")
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": claimed}, content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_error(client.head(f"/v2/{repo}/blobs/{claimed}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404
    hexes = {claimed.split(":")[1], sha256(data).split(":")[1]}
    assert not [p for p in (data_root / "v1/blobs").rglob("*") if p.name in hexes]
    uploads = data_root / "v1/repositories" / repo / "_uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_put_without_digest_or_with_bad_digest(client: httpx.Client, repo: str) -> None:
    location = start(client, repo)
    assert_error(client.put(location, content=b"x"), 400, "DIGEST_INVALID")
    location = start(client, repo)
    assert_error(client.put(location, params={"digest": "sha256:nothex"}, content=b"x"), 400, "DIGEST_INVALID")
    assert_error(client.put(location, params={"digest": "md5:" + "a" * 32}, content=b"x"), 400, "DIGEST_INVALID")


def test_sha512_blob(client: httpx.Client, repo: str) -> None:
    data = os.urandom(50_000)
    location = start(client, repo)
    r = client.patch(location, content=data)
    r = client.put(r.headers["Location"], params={"digest": sha512(data)})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == sha512(data)
    got = client.get(f"/v2/{repo}/blobs/{sha512(data)}")
    assert got.content == data and got.headers["Docker-Content-Digest"] == sha512(data)


def test_cancel_upload(client: httpx.Client, repo: str) -> None:
    location = start(client, repo)
    client.patch(location, content=b"partial")
    assert client.delete(location).status_code == 204
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.patch(location, content=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")


def test_unknown_and_malformed_upload_ids(client: httpx.Client, repo: str) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    assert_error(client.get(f"/v2/{repo}/blobs/uploads/{unknown}"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/blobs/uploads/not-an-upload-id!"), 404, "BLOB_UPLOAD_UNKNOWN")
    r = client.get(f"/v2/{repo}/blobs/uploads/..%2F..%2Fx")  # no route takes a slash in an upload id
    assert r.status_code == 404 and r.json()["errors"]


def test_range_requests(client: httpx.Client, repo: str) -> None:
    data = bytes(range(256)) * 40
    digest = upload(client, repo, data)
    url = f"/v2/{repo}/blobs/{digest}"
    r = client.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = client.get(url, headers={"Range": "bytes=10000-"})
    assert r.status_code == 206 and r.content == data[10000:]
    r = client.get(url, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = client.get(url, headers={"Range": "bytes=5-100000"})
    assert r.status_code == 206 and r.content == data[5:]
    for ignored in ("items=0-5", "bytes=5-2", "bytes=0-1,5-6", "bytes=-"):  # not one valid byte range: whole blob
        r = client.get(url, headers={"Range": ignored})
        assert r.status_code == 200 and r.content == data, ignored
    r = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    assert int(r.headers["Content-Length"]) == len(r.content)


def test_blob_access_goes_through_the_repository_link(client: httpx.Client, repo: str) -> None:
    digest = upload(client, repo, b"only in one repository")
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200
    assert_error(client.get(f"/v2/{repo}-other/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_cross_repository_mount(client: httpx.Client, repo: str) -> None:
    digest = upload(client, repo, b"mount me")
    r = client.post(f"/v2/{repo}/copy/blobs/uploads/", params={"mount": digest, "from": repo})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/{repo}/copy/blobs/{digest}").content == b"mount me"
    # The source does not have it: a normal upload starts instead.
    missing = sha256(b"never uploaded")
    r = client.post(f"/v2/{repo}/other/blobs/uploads/", params={"mount": missing, "from": repo})
    assert r.status_code == 202 and "/blobs/uploads/" in r.headers["Location"]
    r = client.post(f"/v2/{repo}/other/blobs/uploads/", params={"mount": digest, "from": "Not/Valid"})
    assert r.status_code == 202


def test_delete_blob(client: httpx.Client, repo: str) -> None:
    digest = upload(client, repo, b"delete me")
    r = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 202
    assert_error(client.head(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(client.delete(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_empty_blob(client: httpx.Client, repo: str) -> None:
    digest = upload(client, repo, b"")
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200 and r.content == b""


def test_same_blob_uploaded_concurrently(client: httpx.Client, repo: str, server) -> None:  # type: ignore[no-untyped-def]
    import concurrent.futures

    data = os.urandom(3_000_000)

    def push(i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            loc = c.post(f"/v2/{repo}{i % 3}/blobs/uploads/").headers["Location"]
            r = c.patch(loc, content=data)
            return c.put(r.headers["Location"], params={"digest": sha256(data)}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(push, range(8))) == [201] * 8
    for i in range(3):
        assert client.get(f"/v2/{repo}{i}/blobs/{sha256(data)}").content == data


def test_download_stops_reading_when_the_client_goes_away(client: httpx.Client, repo: str, server) -> None:  # type: ignore[no-untyped-def]
    import socket
    import time

    data = os.urandom(64 * 1024 * 1024)
    digest = upload(client, repo, data)
    pid = server.process.pid

    def read_bytes() -> int:
        with open(f"/proc/{pid}/io") as io:
            return int(next(line for line in io if line.startswith("rchar")).split()[1])

    before = read_bytes()
    with socket.create_connection((server.host, server.port)) as s:
        s.sendall(f"GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(1000)
    time.sleep(1.5)
    assert read_bytes() - before < 40 * 1024 * 1024  # nowhere near the whole 64 MiB
