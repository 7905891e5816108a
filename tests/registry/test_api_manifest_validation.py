"""What a manifest push must agree with: the blobs it names (their sizes), its own type (no
ambiguous documents, CVE-2021-41190), and the sparse-index setting; against a real server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support import images
from tests.support.images import Blob, build_index, canonical_json, push_image, simple_image
from tests.support.servers import RunningServer, start_cargobay

from .helpers import assert_error, sha256, upload

EMPTY = Blob.of("application/vnd.oci.empty.v1+json", b"{}")
ARTIFACT = "application/vnd.example.report.v1"


def put(client: httpx.Client, repo: str, ref: str, body: bytes, media_type: str) -> httpx.Response:
    return client.put(f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})


def refused(client: httpx.Client, repo: str, body: bytes, media_type: str, code: str = "MANIFEST_INVALID") -> dict:
    """Assert the push is refused with `code` and nothing was stored; return the error entry."""
    r = put(client, repo, "x", body, media_type)
    assert_error(r, 400, code)
    assert_error(client.head(f"/v2/{repo}/manifests/{sha256(body)}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.head(f"/v2/{repo}/manifests/x"), 404, "MANIFEST_UNKNOWN")
    entry: dict = r.json()["errors"][0]
    return entry


def pushed(client: httpx.Client, repo: str, image: images.Image) -> dict:
    """Push `image` by digest; its manifest as a JSON object, to derive variants from."""
    push_image(client, "", repo, image)
    obj: dict = json.loads(image.manifest)
    return obj


# -- 1. descriptor sizes must match what is stored -------------------------------------------------
@pytest.mark.parametrize("where", ["config", "layers[1]"])
def test_a_descriptor_size_that_disagrees_with_the_stored_blob_is_refused(client: httpx.Client, repo: str,
                                                                         where: str) -> None:
    image = simple_image("size-" + where)
    obj = pushed(client, repo, image)
    target = obj["config"] if where == "config" else obj["layers"][1]
    stored = target["size"]
    target["size"] = stored + 5
    entry = refused(client, repo, canonical_json(obj), images.OCI_MANIFEST)
    assert entry["detail"] == {"descriptor": where, "digest": target["digest"], "size": stored + 5,
                               "stored_size": stored}
    assert where in entry["message"] and target["digest"] in entry["message"]
    assert str(stored + 5) in entry["message"] and str(stored) in entry["message"]


def test_an_index_whose_child_size_disagrees_is_refused(client: httpx.Client, repo: str) -> None:
    a, b = simple_image("child-a"), simple_image("child-b", platform="linux/arm64")
    push_image(client, "", repo, a)
    push_image(client, "", repo, b)
    obj = json.loads(build_index([a, b]).manifest)
    obj["manifests"][1]["size"] -= 5
    entry = refused(client, repo, canonical_json(obj), images.OCI_INDEX)
    assert entry["detail"]["descriptor"] == "manifests[1]" and entry["detail"]["digest"] == b.digest
    assert entry["detail"]["stored_size"] == len(b.manifest)


def test_a_docker_manifest_with_a_wrong_layer_size_is_refused(client: httpx.Client, repo: str) -> None:
    obj = pushed(client, repo, simple_image("docker-size", flavour="docker"))
    obj["layers"][0]["size"] += 1
    refused(client, repo, canonical_json(obj), images.DOCKER_MANIFEST)


def test_the_subject_is_not_checked_so_push_order_never_matters(client: httpx.Client, repo: str) -> None:
    # distribution-spec: a subject that is not (yet) pushed must be accepted; so a present one is
    # not held to more, or whether a referrer is accepted would depend on push order.
    image = simple_image("subject-size")
    push_image(client, "", repo, image)
    upload(client, repo, EMPTY.data)
    body = canonical_json({"schemaVersion": 2, "mediaType": images.OCI_MANIFEST, "artifactType": ARTIFACT,
                           "config": EMPTY.descriptor(), "layers": [],
                           "subject": image.descriptor(size=len(image.manifest) + 5)})
    r = put(client, repo, sha256(body), body, images.OCI_MANIFEST)
    assert r.status_code == 201 and r.headers["OCI-Subject"] == image.digest


# -- 2. a manifest must be one thing, and agree with its type --------------------------------------
def test_an_index_that_also_carries_layers_or_config_is_refused(client: httpx.Client, repo: str) -> None:
    image = simple_image("ambiguous-index")
    obj = pushed(client, repo, image)
    index = json.loads(build_index([image]).manifest)
    for extra in ({"layers": obj["layers"]}, {"config": obj["config"]}):
        entry = refused(client, repo, canonical_json({**index, **extra}), images.OCI_INDEX)
        assert next(iter(extra)) in entry["message"]


def test_an_image_manifest_that_also_carries_manifests_is_refused(client: httpx.Client, repo: str) -> None:
    image = simple_image("ambiguous-manifest")
    obj = pushed(client, repo, image)
    index = json.loads(build_index([image]).manifest)
    refused(client, repo, canonical_json({**obj, "manifests": index["manifests"]}), images.OCI_MANIFEST)
    # Without a mediaType or Content-Type to say which it is, the shape cannot decide either.
    body = canonical_json({k: v for k, v in {**obj, "manifests": index["manifests"]}.items() if k != "mediaType"})
    refused(client, repo, body, "application/json")


def test_docker_types_with_the_other_kinds_fields_are_refused(client: httpx.Client, repo: str) -> None:
    image = simple_image("ambiguous-docker", flavour="docker")
    obj = pushed(client, repo, image)
    listing = json.loads(build_index([image], flavour="docker").manifest)
    refused(client, repo, canonical_json({**listing, "layers": obj["layers"]}), images.DOCKER_LIST)
    refused(client, repo, canonical_json({**obj, "manifests": listing["manifests"]}), images.DOCKER_MANIFEST)


def test_docker_manifests_must_name_their_type_and_carry_no_oci_only_fields(client: httpx.Client, repo: str) -> None:
    subject = simple_image("docker-subject")
    push_image(client, "", repo, subject)
    obj = pushed(client, repo, simple_image("docker-fields", flavour="docker"))
    without_type = {k: v for k, v in obj.items() if k != "mediaType"}
    refused(client, repo, canonical_json(without_type), images.DOCKER_MANIFEST)
    entry = refused(client, repo, canonical_json({**obj, "subject": subject.descriptor()}), images.DOCKER_MANIFEST)
    assert "subject" in entry["message"]
    refused(client, repo, canonical_json({**obj, "artifactType": ARTIFACT}), images.DOCKER_MANIFEST)
    assert client.get(f"/v2/{repo}/referrers/{subject.digest}").json()["manifests"] == []


def test_embedded_data_must_be_the_content_it_describes(client: httpx.Client, repo: str) -> None:
    upload(client, repo, EMPTY.data)
    good = canonical_json({"schemaVersion": 2, "mediaType": images.OCI_MANIFEST, "artifactType": ARTIFACT,
                           "config": EMPTY.descriptor(data=base64.b64encode(EMPTY.data).decode()), "layers": []})
    assert put(client, repo, "embedded", good, images.OCI_MANIFEST).status_code == 201
    bad = canonical_json({"schemaVersion": 2, "mediaType": images.OCI_MANIFEST, "artifactType": ARTIFACT,
                          "config": EMPTY.descriptor(data=base64.b64encode(b"[]").decode()), "layers": []})
    assert "data" in refused(client, repo, bad, images.OCI_MANIFEST)["message"]


def test_valid_oci_1_1_artifacts_and_plain_indexes_stay_accepted(client: httpx.Client, repo: str) -> None:
    upload(client, repo, EMPTY.data)
    payload = Blob.of("application/vnd.example.payload", b"report")
    upload(client, repo, payload.data)
    artifact = canonical_json({"schemaVersion": 2, "mediaType": images.OCI_MANIFEST, "artifactType": ARTIFACT,
                               "config": EMPTY.descriptor(), "layers": [payload.descriptor()]})
    assert put(client, repo, "artifact", artifact, images.OCI_MANIFEST).status_code == 201
    image = simple_image("plain-index")
    push_image(client, "", repo, image)
    # An index naming its type only by Content-Type, with an artifactType (image-spec 1.1).
    index = canonical_json({"schemaVersion": 2, "artifactType": ARTIFACT,
                            "manifests": [image.descriptor(platform=image.platform)]})
    r = put(client, repo, "index", index, images.OCI_INDEX)
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/{repo}/manifests/index").headers["Content-Type"] == images.OCI_INDEX


# -- 5. sparse indexes, with the setting on ---------------------------------------------------------
@pytest.fixture(scope="module")
def sparse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_cargobay(tmp_path_factory.mktemp("sparse"),
                         env={"CARGOBAY_VALIDATION_MANIFESTS_ALLOW_SPARSE_INDEXES": "true"})
    yield srv
    srv.stop()


@pytest.fixture()
def sparse_client(sparse_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sparse_server.url, timeout=30) as c:
        yield c


def test_sparse_indexes_are_refused_by_default(client: httpx.Client, repo: str) -> None:
    kept = simple_image("sparse-default-kept")
    push_image(client, "", repo, kept)
    index = build_index([kept, simple_image("sparse-default-absent", platform="linux/arm64")])
    refused(client, repo, index.manifest, images.OCI_INDEX, code="MANIFEST_BLOB_UNKNOWN")


def test_sparse_indexes_are_accepted_when_allowed(sparse_client: httpx.Client, repo: str) -> None:
    kept = simple_image("sparse-kept")
    absent = simple_image("sparse-absent", platform="linux/arm64")
    push_image(sparse_client, "", repo, kept)
    index = build_index([kept, absent])
    r = put(sparse_client, repo, "multi", index.manifest, images.OCI_INDEX)
    assert r.status_code == 201, r.text
    got = sparse_client.get(f"/v2/{repo}/manifests/multi")
    assert got.status_code == 200 and got.content == index.manifest
    assert sparse_client.get(f"/v2/{repo}/manifests/{kept.digest}").status_code == 200
    assert_error(sparse_client.get(f"/v2/{repo}/manifests/{absent.digest}"), 404, "MANIFEST_UNKNOWN")
    # The children that are present are still held to their descriptors.
    obj = json.loads(index.manifest)
    obj["manifests"][0]["size"] += 5
    refused(sparse_client, repo, canonical_json(obj), images.OCI_INDEX)


def test_sparse_index_survives_gc(sparse_server: RunningServer, sparse_client: httpx.Client, repo: str) -> None:
    kept = simple_image("sparse-gc")
    push_image(sparse_client, "", repo, kept)
    index = build_index([kept, simple_image("sparse-gc-absent", platform="linux/arm64")])
    assert put(sparse_client, repo, "multi", index.manifest, images.OCI_INDEX).status_code == 201
    assert sparse_server.root is not None
    result = subprocess.run([sys.executable, "-m", "registry", "gc", "--root", str(sparse_server.root), "--grace", "0"],
                            capture_output=True, text=True, env=sparse_server.env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert sparse_client.get(f"/v2/{repo}/manifests/multi").content == index.manifest
    for blob in kept.blobs():
        assert sparse_client.head(f"/v2/{repo}/blobs/{blob.digest}").status_code == 200
