"""`limits.max_manifest_bytes` above the OCI model's 4 MiB default: what a push was allowed to store
must also be readable, listable and deletable afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ocispec.digest import Digest
from ocispec.manifest import MAX_MANIFEST_SIZE
from storage import paths
from tests.support.images import OCI_INDEX, canonical_json, push_image, simple_image
from tests.support.servers import RunningServer, start_cargobay

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def large_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_cargobay(tmp_path_factory.mktemp("large-manifests"), env={
        "CARGOBAY_LIMITS_MAX_MANIFEST_BYTES": str(8 * MiB), "CARGOBAY_STORAGE_DELETE_ENABLED": "true"})
    yield srv
    srv.stop()


def test_a_manifest_above_4_mib_is_served_listed_and_deleted_whole(large_server: RunningServer) -> None:
    repo = "big/index"
    image = simple_image("large-manifest-subject")
    # An index of one image that also refers to it (subject), made 5 MiB by its annotations.
    annotations = {f"org.example.note.{i:05d}": "n" * 1000 for i in range(5 * 1024)}
    body = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                           "manifests": [image.descriptor(platform=image.platform)],
                           "subject": image.descriptor(), "annotations": annotations})
    assert MAX_MANIFEST_SIZE < 5 * MiB <= len(body) < 8 * MiB
    digest = Digest.of(body)
    assert large_server.root is not None
    root: Path = large_server.root
    with httpx.Client(base_url=large_server.url, timeout=60) as client:
        push_image(client, "", repo, image)
        put = client.put(f"/v2/{repo}/manifests/big", content=body, headers={"Content-Type": OCI_INDEX})
        assert put.status_code == 201, put.text
        assert put.headers["OCI-Subject"] == image.digest

        # The bytes name their type, so the push kept no record of it: the GET types the manifest
        # from its bytes, all 5 MiB of them.
        assert not (root / paths.manifest_media_type(repo, digest)).exists()
        got = client.get(f"/v2/{repo}/manifests/big")
        assert got.status_code == 200 and got.content == body
        assert got.headers["Content-Type"] == OCI_INDEX
        referrers = client.get(f"/v2/{repo}/referrers/{image.digest}").json()["manifests"]
        assert [r["digest"] for r in referrers] == [str(digest)]

        # Deleting it reads its subject from the stored bytes, to remove its referrer entry.
        assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
        assert client.get(f"/v2/{repo}/manifests/{digest}").status_code == 404
        assert client.get(f"/v2/{repo}/referrers/{image.digest}").json()["manifests"] == []
        assert not (root / paths.referrer(repo, Digest.parse(image.digest), digest)).exists()
