"""A manifest must be one thing and agree with its type (strict parsing); stored manifests are
still read leniently, and garbage collection sees every blob any of them names."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from ocispec import mediatypes as mt
from ocispec.digest import Digest
from ocispec.errors import OCIValidationError
from ocispec.manifest import ImageIndex, ImageManifest, labelled_descriptors, parse_manifest, referenced_blobs

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
CONFIG = {"mediaType": mt.OCI_CONFIG, "digest": A, "size": 2}
LAYERS = [{"mediaType": mt.OCI_LAYER_GZIP, "digest": B, "size": 3}]
CHILDREN = [{"mediaType": mt.OCI_MANIFEST, "digest": A, "size": 5}]


def raw(**fields: object) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}).encode()


@pytest.mark.parametrize("body,content_type,words", [
    (raw(mediaType=mt.OCI_INDEX, manifests=CHILDREN, layers=LAYERS), None, "layers"),
    (raw(mediaType=mt.OCI_INDEX, manifests=CHILDREN, config=CONFIG), None, "config"),
    (raw(manifests=CHILDREN, config=CONFIG, layers=LAYERS), None, "config or layers"),  # shape says index
    (raw(mediaType=mt.OCI_MANIFEST, config=CONFIG, layers=LAYERS, manifests=CHILDREN), None, "manifests"),
    (raw(config=CONFIG, layers=LAYERS, manifests=CHILDREN), mt.OCI_MANIFEST, "manifests"),
    (raw(mediaType=mt.DOCKER_MANIFEST_LIST, manifests=CHILDREN, layers=LAYERS), None, "layers"),
    (raw(config=CONFIG, layers=LAYERS), mt.DOCKER_MANIFEST, "mediaType"),
    (raw(manifests=CHILDREN), mt.DOCKER_MANIFEST_LIST, "mediaType"),
    (raw(mediaType=mt.DOCKER_MANIFEST, config=CONFIG, layers=LAYERS, subject=CHILDREN[0]), None, "subject"),
    (raw(mediaType=mt.DOCKER_MANIFEST_LIST, manifests=CHILDREN, artifactType="a/b"), None, "artifactType"),
])
def test_contradicting_manifests_are_refused(body: bytes, content_type: str | None, words: str) -> None:
    with pytest.raises(OCIValidationError, match=words):
        parse_manifest(body, content_type)
    parse_manifest(body, content_type, strict=False)  # the schema itself is fine: readable when stored


def test_null_fields_count_as_absent() -> None:
    parsed = parse_manifest(raw(mediaType=mt.OCI_INDEX, manifests=CHILDREN, layers=None, config=None))
    assert isinstance(parsed, ImageIndex)


def test_oci_artifacts_and_indexes_with_oci_1_1_fields_are_valid() -> None:
    empty = {"mediaType": mt.OCI_EMPTY, "digest": str(Digest.of(mt.EMPTY_JSON)), "size": 2,
             "data": base64.b64encode(mt.EMPTY_JSON).decode()}
    artifact = parse_manifest(raw(mediaType=mt.OCI_MANIFEST, artifactType="application/x.report", config=empty,
                                  layers=[], subject=CHILDREN[0]))
    assert isinstance(artifact, ImageManifest) and artifact.effective_artifact_type == "application/x.report"
    index = parse_manifest(raw(manifests=CHILDREN, artifactType="a/b", subject=CHILDREN[0]), mt.OCI_INDEX)
    assert [where for where, _ in labelled_descriptors(index)] == ["manifests[0]", "subject"]


@pytest.mark.parametrize("data,size,words", [
    ("not base64!", 2, "base64"),
    (base64.b64encode(b"{}").decode(), 3, "2 bytes"),
    (base64.b64encode(b"[]").decode(), 2, "does not match"),
])
def test_embedded_data_must_be_the_described_content(data: str, size: int, words: str) -> None:
    config = {"mediaType": mt.OCI_EMPTY, "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": size,
              "data": data}
    with pytest.raises(OCIValidationError, match=words):
        parse_manifest(raw(mediaType=mt.OCI_MANIFEST, config=config, layers=[]))


def test_referenced_blobs_sees_every_blob_whatever_the_type_claims() -> None:
    # An index that also carries layers, accepted before the strict rules: its layers stay live.
    assert referenced_blobs(raw(mediaType=mt.OCI_INDEX, manifests=CHILDREN, layers=LAYERS)) == {Digest.parse(B)}
    assert referenced_blobs(raw(config=CONFIG, layers=[*LAYERS, {"digest": "bad"}, 7])) == {Digest.parse(A),
                                                                                          Digest.parse(B)}
    assert referenced_blobs(b"not json") == set()
    assert referenced_blobs(raw(mediaType=mt.OCI_INDEX, manifests=CHILDREN)) == set()
