"""Against a real server: an upload id and a blob belong to the repository they were pushed to.
Another repository's URL with them answers 404 (BLOB_UPLOAD_UNKNOWN, BLOB_UNKNOWN) and changes
nothing, as CNCF Distribution does."""

from __future__ import annotations

import httpx

from .helpers import assert_error, sha256, upload


def test_an_upload_id_cannot_be_continued_or_completed_through_another_repository(client: httpx.Client,
                                                                                  repo: str) -> None:
    data = b"first half|second half"
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    upload_id = r.headers["Docker-Upload-UUID"]
    r = client.patch(r.headers["Location"], content=data[:11],
                     headers={"Content-Range": "0-10", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-10"
    own = r.headers["Location"]
    foreign = f"/v2/{repo}-other/blobs/uploads/{upload_id}"
    assert_error(client.get(foreign), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.patch(foreign, content=data[11:], headers={"Content-Range": f"11-{len(data) - 1}"}),
                 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.put(foreign, params={"digest": sha256(data[:11])}), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.put(foreign, params={"digest": sha256(data)}, content=data[11:]), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.delete(foreign), 404, "BLOB_UPLOAD_UNKNOWN")
    # The upload is untouched in its own repository and finishes there; the other has nothing.
    status = client.get(own)
    assert status.status_code == 204 and status.headers["Range"] == "0-10"
    done = client.put(own, params={"digest": sha256(data)}, content=data[11:])
    assert done.status_code == 201, done.text
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
    assert_error(client.head(f"/v2/{repo}-other/blobs/{sha256(data)}"), 404, "BLOB_UNKNOWN")
    assert_error(client.head(f"/v2/{repo}-other/blobs/{sha256(data[:11])}"), 404, "BLOB_UNKNOWN")


def test_a_blob_is_served_only_by_repositories_that_link_it(client: httpx.Client, repo: str) -> None:
    digest = upload(client, repo, b"linked in one repository only")
    for method in ("GET", "HEAD"):
        for headers in ({}, {"Range": "bytes=0-3"}):
            assert_error(client.request(method, f"/v2/{repo}-other/blobs/{digest}", headers=headers),
                         404, "BLOB_UNKNOWN")
    assert client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=0-5"}).content == b"linked"
