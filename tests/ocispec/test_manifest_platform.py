import json

import pytest

from ocispec import mediatypes as mt
from ocispec.errors import OCIValidationError
from ocispec.manifest import ImageIndex, ImageManifest, parse_manifest
from ocispec.platform import Platform, match_rank

D = "sha256:" + "b" * 64


def manifest(**extra: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                       "config": {"mediaType": mt.OCI_CONFIG, "digest": D, "size": 2},
                       "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D, "size": 3}], **extra}).encode()


def test_parse_keeps_raw_bytes_and_descriptors() -> None:
    raw = manifest(annotations={"a": "b"})
    parsed = parse_manifest(raw, mt.OCI_MANIFEST)
    assert isinstance(parsed, ImageManifest)
    assert parsed.raw is raw and parsed.annotations == {"a": "b"}
    assert [str(d.digest) for d in parsed.blobs()] == [D, D]
    assert parsed.effective_artifact_type == mt.OCI_CONFIG


def test_media_type_from_content_type_when_field_absent() -> None:
    raw = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert isinstance(parse_manifest(raw, mt.OCI_INDEX), ImageIndex)


@pytest.mark.parametrize("raw,content_type", [
    (b"not json", mt.OCI_MANIFEST),
    (b"[]", mt.OCI_MANIFEST),
    (json.dumps({"schemaVersion": 1}).encode(), mt.OCI_MANIFEST),
    (manifest(), mt.DOCKER_MANIFEST),  # declared type disagrees with Content-Type
    (json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {"digest": D, "size": 1}}).encode(), None),
    (json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                 "config": {"mediaType": "x", "digest": "sha256:zz", "size": 1}}).encode(), None),
    (json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                 "config": {"mediaType": "x", "digest": D, "size": -1}}).encode(), None),
    (json.dumps({"schemaVersion": 2, "mediaType": "application/x-unknown"}).encode(), None),
    (b" " * (4 * 1024 * 1024 + 1), None),
])
def test_invalid_manifests(raw: bytes, content_type: str | None) -> None:
    with pytest.raises(OCIValidationError):
        parse_manifest(raw, content_type)


def test_platform_parse_and_fallbacks() -> None:
    assert str(Platform.parse("linux/aarch64")) == "linux/arm64/v8"
    want = Platform.parse("linux/arm/v7")
    assert match_rank(want, Platform.parse("linux/arm/v7")) == 0
    assert match_rank(want, Platform.parse("linux/arm/v6")) == 1
    assert match_rank(want, Platform.parse("linux/arm/v8")) is None
    assert match_rank(Platform.parse("linux/amd64"), Platform.parse("linux/arm64")) is None
    assert match_rank(Platform.parse("linux/arm64"), Platform("linux", "arm64")) == 0
    with pytest.raises(OCIValidationError):
        Platform.parse("linux")
