"""Manifests, tags, referrers and the catalog against a real server."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from ocispec.manifest import MAX_MANIFEST_SIZE
from storage import Storage
from storage.driver.fs import FilesystemDriver
from tests.support import images
from tests.support.images import Blob, build_image, build_index, canonical_json, push_image, simple_image

from .helpers import assert_error, sha256, sha512, upload

ARTIFACT = "application/vnd.example.sbom.v1"


def put(client: httpx.Client, repo: str, ref: str, body: bytes, media_type: str, **params: object) -> httpx.Response:
    return client.put(f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type}, params=params)


def push_blobs(client: httpx.Client, repo: str, image: images.Image) -> None:
    for blob in image.blobs():
        upload(client, repo, blob.data)


def test_put_by_tag_and_get_exact_bytes(client: httpx.Client, repo: str) -> None:
    image = simple_image("exact")
    push_blobs(client, repo, image)
    # Whitespace and key order are the client's: the registry must keep them byte for byte.
    body = json.dumps(json.loads(image.manifest), indent=3).encode() + b"\n"
    r = put(client, repo, "v1", body, image.media_type)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == sha256(body)
    assert r.headers["Location"] == f"/v2/{repo}/manifests/{sha256(body)}"
    for ref in ("v1", sha256(body)):
        got = client.get(f"/v2/{repo}/manifests/{ref}")
        assert got.status_code == 200 and got.content == body
        assert got.headers["Content-Type"] == image.media_type
        assert got.headers["Docker-Content-Digest"] == sha256(body)
        head = client.head(f"/v2/{repo}/manifests/{ref}")
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(body)) and head.content == b""


def test_docker_schema2_manifest_and_list(client: httpx.Client, repo: str) -> None:
    a = simple_image("d1", flavour="docker")
    b = simple_image("d2", platform="linux/arm64/v8", flavour="docker")
    index = build_index([a, b], flavour="docker")
    images.push_index(client, "", repo, index, "multi")
    got = client.get(f"/v2/{repo}/manifests/multi")
    assert got.headers["Content-Type"] == images.DOCKER_LIST and got.content == index.manifest
    assert client.get(f"/v2/{repo}/manifests/{a.digest}").headers["Content-Type"] == images.DOCKER_MANIFEST


def test_put_by_digest_with_several_tags(client: httpx.Client, repo: str) -> None:
    image = simple_image("tags")
    push_blobs(client, repo, image)
    r = client.put(f"/v2/{repo}/manifests/{image.digest}?tag=a&tag=b&tag=c", content=image.manifest,
                   headers={"Content-Type": image.media_type})
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["a", "b", "c"]}


def test_digest_reference_must_match(client: httpx.Client, repo: str) -> None:
    image = simple_image("mismatch")
    push_blobs(client, repo, image)
    assert_error(put(client, repo, sha256(b"other"), image.manifest, image.media_type), 400, "DIGEST_INVALID")
    assert_error(client.head(f"/v2/{repo}/manifests/{image.digest}"), 404, "MANIFEST_UNKNOWN")


def test_sha512_manifest(client: httpx.Client, repo: str) -> None:
    image = simple_image("sha512")
    push_blobs(client, repo, image)
    digest = sha512(image.manifest)
    r = put(client, repo, digest, image.manifest, image.media_type)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/{repo}/manifests/{digest}").content == image.manifest


def test_sha512_push_with_tags_answers_that_digest_and_one_oci_tag_per_tag(client: httpx.Client, repo: str) -> None:
    # distribution-spec development branch, end-7b: PUT by digest with `tag` query parameters.
    image = simple_image("sha512-tags")
    push_blobs(client, repo, image)
    digest = sha512(image.manifest)
    r = client.put(f"/v2/{repo}/manifests/{digest}?tag=a&tag=b", content=image.manifest,
                   headers={"Content-Type": image.media_type})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"] == f"/v2/{repo}/manifests/{digest}"
    assert r.headers.get_list("OCI-Tag") == ["a", "b"]
    for ref in (digest, "a", "b"):
        got = client.get(f"/v2/{repo}/manifests/{ref}")
        assert got.status_code == 200 and got.content == image.manifest
        assert got.headers["Docker-Content-Digest"] == digest
        head = client.head(f"/v2/{repo}/manifests/{ref}")
        assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["a", "b"]


def test_push_by_digest_takes_many_tags_at_once(client: httpx.Client, repo: str) -> None:
    # The spec asks for at least 10 per request; each accepted one comes back in an OCI-Tag header.
    image = simple_image("many-tags")
    push_blobs(client, repo, image)
    names = [f"v{i:02d}" for i in range(12)]
    r = client.put(f"/v2/{repo}/manifests/{image.digest}", params=[("tag", n) for n in names], content=image.manifest,
                   headers={"Content-Type": image.media_type})
    assert r.status_code == 201 and r.headers.get_list("OCI-Tag") == names
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == names


def test_push_by_tag_names_that_tag_and_a_bad_extra_tag_stores_nothing(client: httpx.Client, repo: str) -> None:
    image = simple_image("oci-tag")
    push_blobs(client, repo, image)
    r = put(client, repo, "v1", image.manifest, image.media_type)
    assert r.status_code == 201 and r.headers.get_list("OCI-Tag") == ["v1"]
    other = simple_image("oci-tag-bad")
    push_blobs(client, repo, other)
    r = client.put(f"/v2/{repo}/manifests/{other.digest}?tag=ok&tag=-bad", content=other.manifest,
                   headers={"Content-Type": other.media_type})
    assert_error(r, 400, "TAG_INVALID")
    assert_error(client.head(f"/v2/{repo}/manifests/{other.digest}"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]


def test_missing_blob_is_manifest_blob_unknown(client: httpx.Client, repo: str) -> None:
    image = simple_image("missing")
    upload(client, repo, image.config.data)  # layers never pushed
    assert_error(put(client, repo, "x", image.manifest, image.media_type), 400, "MANIFEST_BLOB_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/x"), 404, "MANIFEST_UNKNOWN")


def test_blob_in_other_repository_does_not_count(client: httpx.Client, repo: str) -> None:
    image = simple_image("elsewhere")
    push_blobs(client, repo + "-src", image)
    assert_error(put(client, repo, "x", image.manifest, image.media_type), 400, "MANIFEST_BLOB_UNKNOWN")


def test_index_needs_its_manifests(client: httpx.Client, repo: str) -> None:
    a, b = simple_image("i1"), simple_image("i2", platform="linux/arm64")
    push_image(client, "", repo, a)
    index = build_index([a, b])
    assert_error(put(client, repo, "idx", index.manifest, index.media_type), 400, "MANIFEST_BLOB_UNKNOWN")
    push_image(client, "", repo, b)
    assert put(client, repo, "idx", index.manifest, index.media_type).status_code == 201


def test_non_distributable_layers_with_urls_may_be_absent(client: httpx.Client, repo: str) -> None:
    config = Blob.of(images.OCI_CONFIG,
                     b'{"architecture":"amd64","os":"windows","rootfs":{"type":"layers","diff_ids":[]}}')
    upload(client, repo, config.data)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": images.OCI_MANIFEST, "config": config.descriptor(),
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                                           "digest": sha256(b"foreign"), "size": 7,
                                           "urls": ["https://example.invalid/layer"]}]})
    assert put(client, repo, "win", manifest, images.OCI_MANIFEST).status_code == 201


@pytest.mark.parametrize("body,content_type", [
    (b"{not json", images.OCI_MANIFEST),
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}', images.OCI_MANIFEST),
    (b'{"schemaVersion": 1}', images.OCI_MANIFEST),
])
def test_invalid_manifests(client: httpx.Client, repo: str, body: bytes, content_type: str) -> None:
    assert_error(put(client, repo, "bad", body, content_type), 400, "MANIFEST_INVALID")


def test_media_type_must_match_content_type(client: httpx.Client, repo: str) -> None:
    image = simple_image("ctype")
    push_blobs(client, repo, image)
    assert_error(put(client, repo, "x", image.manifest, images.DOCKER_MANIFEST), 400, "MANIFEST_INVALID")


def test_oversized_manifest_is_413(client: httpx.Client, repo: str) -> None:
    body = b'{"schemaVersion":2,"annotations":{"a":"' + b"x" * MAX_MANIFEST_SIZE + b'"}}'
    r = put(client, repo, "huge", body, images.OCI_MANIFEST)
    assert r.status_code == 413 and r.json()["errors"]


def test_invalid_tag_in_path(client: httpx.Client, repo: str) -> None:
    assert_error(client.get(f"/v2/{repo}/manifests/-bad-tag"), 400, "TAG_INVALID")
    assert_error(client.get(f"/v2/{repo}/manifests/sha256:123"), 400, "DIGEST_INVALID")
    assert_error(put(client, repo, "." * 3, b"{}", images.OCI_MANIFEST), 400, "TAG_INVALID")


def test_delete_by_tag_keeps_manifest_and_by_digest_removes_it(client: httpx.Client, repo: str) -> None:
    image = simple_image("del")
    push_image(client, "", repo, image, "one")
    put(client, repo, "two", image.manifest, image.media_type)
    assert client.delete(f"/v2/{repo}/manifests/one").status_code == 202
    assert_error(client.get(f"/v2/{repo}/manifests/one"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/manifests/{image.digest}").status_code == 200
    assert client.delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202
    assert_error(client.get(f"/v2/{repo}/manifests/{image.digest}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/two"), 404, "MANIFEST_UNKNOWN")  # its tags went with it
    assert_error(client.delete(f"/v2/{repo}/manifests/{image.digest}"), 404, "MANIFEST_UNKNOWN")


def test_tags_pagination(client: httpx.Client, repo: str) -> None:
    image = simple_image("pages")
    push_image(client, "", repo, image)
    names = [f"t{i:02d}" for i in range(12)]
    for name in reversed(names):
        put(client, repo, name, image.manifest, image.media_type)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == names
    seen: list[str] = []
    url: str | None = f"/v2/{repo}/tags/list?n=5"
    while url:
        r = client.get(url)
        seen += r.json()["tags"]
        link = r.headers.get("Link")
        url = link[1:link.index(">")] if link else None
        assert not link or link.endswith('rel="next"')
    assert seen == names
    assert client.get(f"/v2/{repo}/tags/list", params={"n": 3, "last": "t05"}).json()["tags"] == ["t06", "t07", "t08"]
    assert client.get(f"/v2/{repo}/tags/list", params={"n": 0}).json()["tags"] == []
    assert_error(client.get(f"/v2/{repo}/tags/list", params={"n": "x"}), 400, "PAGINATION_NUMBER_INVALID")
    assert_error(client.get(f"/v2/{repo}-none/tags/list"), 404, "NAME_UNKNOWN")


def test_catalog_pagination(client: httpx.Client, repo: str) -> None:
    image = simple_image("catalog")
    names = [f"{repo}/c{i}" for i in range(4)]
    for name in names:
        push_image(client, "", name, image, "x")
    everything = client.get("/v2/_catalog").json()["repositories"]
    assert [n for n in everything if n.startswith(repo + "/")] == names
    assert everything == sorted(everything)
    r = client.get("/v2/_catalog", params={"n": 2, "last": names[0]})
    assert r.json()["repositories"] == names[1:3]
    assert r.headers["Link"] == f'</v2/_catalog?n=2&last={names[2].replace("/", "%2F")}>; rel="next"'


def _expected_page(items: list[str], path: str, n: int | None, last: str | None) -> tuple[list[str], str | None]:
    """What `n` and `last` select from a sorted list, and the `Link` header, as the registry has
    always answered (its pages now come from the listing index: they must not differ)."""
    after = [item for item in items if not last or item > last]
    size = 1000 if n is None else n
    page = after[:size]
    more = len(after) > size and page
    return page, (f'<{path}?n={size}&last={quote(page[-1], safe="")}>; rel="next"' if more else None)


def test_pages_are_the_full_lists_sliced_for_any_n_and_last(client: httpx.Client, repo: str,
                                                          data_root: Path) -> None:
    image = simple_image("slices")
    push_image(client, "", repo, image, "keep")
    tags = ["1", "1-0", "1.0", "10", "A", "Z9", "_x", "a", "a-b", "a..b", "a.b", "ab", "abc", "abcd", "v1.2.3"]
    for tag in tags:
        assert put(client, repo, tag, image.manifest, image.media_type).status_code == 201
    assert client.delete(f"/v2/{repo}/manifests/a-b").status_code == 202  # a deleted tag is not listed
    names = [f"{repo}/{suffix}" for suffix in ("a", "a-b", "a.b", "a/b", "ab", "b")]
    for name in names:
        push_image(client, "", name, image, "x")
    # The tree's answer: every repository that has a manifest (one whose manifests were all deleted
    # is not listed, as on S3; on disk its emptied directories used to keep it in the catalog).
    tree = Storage(FilesystemDriver(data_root))
    everything = [name for name in tree.repositories() if tree.repository(name).manifests.revisions()]
    assert set(names) <= set(everything)
    listed = sorted({*tags, "keep"} - {"a-b"})
    tags_path, catalog_path = f"/v2/{repo}/tags/list", "/v2/_catalog"
    lasts = [None, "", "1", "1.", "a", "a.", "a/", "ab", "zz", "~", "0", "a\u00e9", repo, f"{repo}/a", f"{repo}/a/"]
    for n in (None, 0, 1, 2, 5):
        for last in lasts:
            params = {key: value for key, value in (("n", n), ("last", last)) if value is not None}
            for path, items, key in ((tags_path, listed, "tags"), (catalog_path, everything, "repositories")):
                r = client.get(path, params=params)
                assert r.status_code == 200, r.text
                page, link = _expected_page(items, path, n, last)
                assert (r.json()[key], r.headers.get("Link")) == (page, link), (path, params)


def test_referrers(client: httpx.Client, repo: str) -> None:
    image = simple_image("subject")
    push_image(client, "", repo, image, "app")
    empty_config = Blob.of("application/vnd.oci.empty.v1+json", b"{}")
    upload(client, repo, empty_config.data)
    made = []
    for i, artifact_type in enumerate([ARTIFACT, ARTIFACT, "application/vnd.example.sig"]):
        layer = Blob.of("application/vnd.example.payload", f"payload {i}".encode())
        upload(client, repo, layer.data)
        artifact = build_image([], subject=image.descriptor(), artifact_type=artifact_type,
                               annotations={"n": str(i)})
        body = canonical_json({**json.loads(artifact.manifest), "config": empty_config.descriptor(),
                               "layers": [layer.descriptor()]})
        r = put(client, repo, sha256(body), body, images.OCI_MANIFEST)
        assert r.status_code == 201 and r.headers["OCI-Subject"] == image.digest
        made.append((sha256(body), artifact_type, len(body)))
    r = client.get(f"/v2/{repo}/referrers/{image.digest}")
    assert r.status_code == 200 and r.headers["Content-Type"] == images.OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == images.OCI_INDEX
    got = {(m["digest"], m["artifactType"], m["size"]) for m in index["manifests"]}
    assert got == set(made)
    assert all(m["annotations"]["n"] in "012" for m in index["manifests"])
    r = client.get(f"/v2/{repo}/referrers/{image.digest}", params={"artifactType": ARTIFACT})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert {m["digest"] for m in r.json()["manifests"]} == {d for d, t, _ in made if t == ARTIFACT}
    # Deleting a referrer removes it from the list.
    client.delete(f"/v2/{repo}/manifests/{made[0][0]}")
    assert len(client.get(f"/v2/{repo}/referrers/{image.digest}").json()["manifests"]) == 2


def test_referrers_of_missing_subject_and_empty_list(client: httpx.Client, repo: str) -> None:
    missing = sha256(b"not pushed yet")
    r = client.get(f"/v2/{repo}/referrers/{missing}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    empty_config = upload(client, repo, b"{}")
    body = canonical_json({"schemaVersion": 2, "mediaType": images.OCI_MANIFEST, "artifactType": ARTIFACT,
                           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_config,
                                      "size": 2},
                           "layers": [], "subject": {"mediaType": images.OCI_MANIFEST, "digest": missing, "size": 10}})
    r = put(client, repo, sha256(body), body, images.OCI_MANIFEST)
    assert r.status_code == 201 and r.headers["OCI-Subject"] == missing
    assert [m["digest"] for m in client.get(f"/v2/{repo}/referrers/{missing}").json()["manifests"]] == [sha256(body)]
    assert_error(client.get(f"/v2/{repo}/referrers/sha256:bad"), 400, "DIGEST_INVALID")
