"""Interoperability with CNCF Distribution (Debian's docker-registry): skopeo copies an image from Cargobay
to Distribution and back again, and every manifest and blob keeps its digest and bytes on the way. The two
registries must also describe the same manifest with the same headers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.images import Image, Index, build_index, simple_image, write_oci_layout
from tests.support.servers import RunningServer

from .clients import Skopeo, expected_blobs, get_blob, get_manifest, write_dir_layout


def _target(kind: str) -> Image | Index:
    if kind == "oci-image":
        return simple_image("interop-oci", layer_count=3)
    if kind == "oci-zstd":
        return simple_image("interop-zstd", compression="zstd")
    if kind == "docker-image":
        return simple_image("interop-docker", flavour="docker")
    flavour = "oci" if kind == "oci-index" else "docker"
    return build_index([simple_image(f"interop-{kind}-{p}", p, flavour=flavour, layer_count=1)
                        for p in ("linux/amd64", "linux/arm64/v8", "linux/s390x")], flavour=flavour)


@pytest.mark.parametrize("kind", ["oci-image", "oci-zstd", "docker-image", "oci-index", "docker-list"])
def test_round_trip_through_distribution(cargobay: RunningServer, distribution: RunningServer, skopeo: Skopeo,
                                         tmp_path: Path, kind: str) -> None:
    target = _target(kind)
    if kind.startswith("oci"):
        source = f"oci:{write_oci_layout(tmp_path / 'in', target, 'v1')}:v1"
    else:
        source = f"dir:{write_dir_layout(tmp_path / 'in', target)}"
    repo, back = f"interop/{kind}", f"interop/{kind}-back"
    on_cargobay = f"docker://{cargobay.hostport}/{repo}:v1"
    on_distribution = f"docker://{distribution.hostport}/{repo}:v1"
    back_on_cargobay = f"docker://{cargobay.hostport}/{back}:v1"

    skopeo.copy(source, on_cargobay, "--all", "--preserve-digests")
    skopeo.copy(on_cargobay, on_distribution, "--all", "--preserve-digests")
    skopeo.copy(on_distribution, back_on_cargobay, "--all", "--preserve-digests")

    for ref in (on_cargobay, on_distribution, back_on_cargobay):
        assert skopeo.inspect_raw(ref) == target.manifest, ref
    images = target.images if isinstance(target, Index) else (target,)
    manifests = {target.digest: target.media_type, **{i.digest: i.media_type for i in images}}
    for reference in ("v1", *manifests):
        ours, theirs = get_manifest(cargobay.url, back, reference), get_manifest(distribution.url, repo, reference)
        assert ours.body == theirs.body
        assert (ours.content_type, ours.digest_header) == (theirs.content_type, theirs.digest_header)
        ours_head = httpx.head(f"{cargobay.url}/v2/{back}/manifests/{reference}", headers={"Accept": ours.content_type})
        theirs_head = httpx.head(f"{distribution.url}/v2/{repo}/manifests/{reference}",
                                 headers={"Accept": theirs.content_type})
        for header in ("content-type", "content-length", "docker-content-digest"):
            assert ours_head.headers.get(header) == theirs_head.headers.get(header), header
    for digest, data in expected_blobs(target).items():
        if digest in manifests:
            continue
        assert get_blob(distribution.url, repo, digest) == data
        assert get_blob(cargobay.url, back, digest) == data
    for server, name in ((cargobay, back), (distribution, repo)):
        assert skopeo.list_tags(f"docker://{server.hostport}/{name}") == ["v1"]
