"""What the console's tests look at, pushed into a real `registry serve`: images built by
tests/support/images.py, pushed by skopeo from OCI layouts, and the cheap bulk of it (1,000 tags of
one manifest, dozens of repositories, referrers) added by plain HTTP PUTs and mounts over one
keep-alive connection.

What the pages must show is then read back with skopeo (`Skopeo.manifest`, `expected_size`), not
taken from how the content was built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.clients import Skopeo
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Image,
    Index,
    build_image,
    canonical_json,
    make_layer,
    push_blob,
    push_manifest,
    sha256,
    simple_image,
    write_oci_layout,
)
from tests.support.servers import RunningServer

ATTESTATION_TYPE = "vnd.docker.reference.type"
ATTESTATION_DIGEST = "vnd.docker.reference.digest"
IN_TOTO = "application/vnd.in-toto+json"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM_TYPE = "application/spdx+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
#: The config a manifest page must show, field by field (data-field names of the contract).
APP_CONFIG = {
    "Entrypoint": ["/usr/local/bin/app", "--serve"],
    "Cmd": ["--port", "8080"],
    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "APP_MODE=production"],
    "Labels": {"org.opencontainers.image.source": "https://example.invalid/app", "team": "cargo"},
    "ExposedPorts": {"8080/tcp": {}},
    "User": "1000:1000",
    "WorkingDir": "/srv/app",
}


def docker_ref(server: RunningServer, reference: str) -> str:
    """`docker://host:port/repo:tag` (or `@digest`) for skopeo."""
    return f"docker://{server.hostport}/{reference}"


def skopeo_push(skopeo: Skopeo, server: RunningServer, target: Image | Index, reference: str, workdir: Path) -> None:
    """Push `target` to `repo:tag` with skopeo from an OCI layout, every manifest of an index too."""
    layout = write_oci_layout(workdir / reference.replace("/", "_").replace(":", "_"), target, "src")
    skopeo.copy(f"oci:{layout}:src", docker_ref(server, reference), "--all", "--preserve-digests")


@dataclass(frozen=True)
class MultiPlatform:
    index: Index
    amd64: Image
    arm64: Image
    attestation: Image


def attestation_for(image: Image, seed: str) -> Image:
    """A BuildKit-style provenance attestation manifest (platform unknown/unknown, an in-toto layer)."""
    statement = canonical_json({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
                                "subject": [{"name": seed, "digest": {"sha256": image.digest.split(":")[1]}}],
                                "predicate": {"builder": {"id": "cargobay-tests"}}})
    layer = Blob(IN_TOTO, statement, sha256(statement), diff_id=sha256(statement))
    return build_image([layer], "unknown/unknown")


def multi_platform(seed: str) -> MultiPlatform:
    """An OCI index of linux/amd64 and linux/arm64 plus the amd64 image's attestation entry."""
    amd64 = simple_image(f"{seed}-amd64", "linux/amd64", layer_count=2)
    arm64 = simple_image(f"{seed}-arm64", "linux/arm64", layer_count=1)
    attestation = attestation_for(amd64, seed)
    entries = [amd64.descriptor(platform=amd64.platform), arm64.descriptor(platform=arm64.platform),
               attestation.descriptor(platform={"os": "unknown", "architecture": "unknown"},
                                      annotations={ATTESTATION_TYPE: "attestation-manifest",
                                                   ATTESTATION_DIGEST: amd64.digest})]
    body = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return MultiPlatform(Index(body, OCI_INDEX, (amd64, arm64, attestation)), amd64, arm64, attestation)


def configured_image(seed: str) -> Image:
    """One linux/amd64 image whose config has every field the manifest page shows."""
    layers = [make_layer([(f"app/{seed}-{i}.txt", f"{seed} layer {i}\n".encode() * (i + 1) * 40)]) for i in range(3)]
    return build_image(layers, config_extra={"config": APP_CONFIG})


def artifact(subject: Image, artifact_type: str, payload: bytes, layer_type: str) -> Image:
    """An OCI artifact manifest (empty config, one blob) whose `subject` is `subject`."""
    config = Blob.of(EMPTY_CONFIG, b"{}")
    blob = Blob.of(layer_type, payload)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                               "config": config.descriptor(), "layers": [blob.descriptor()],
                               "subject": subject.descriptor()})
    return Image(manifest, OCI_MANIFEST, config, (blob,), {})


def put_referrer(client: httpx.Client, server: RunningServer, repo: str, referrer: Image) -> None:
    """Its blobs by monolithic upload, its manifest by a plain PUT by digest (as cosign and oras do)."""
    for blob in referrer.blobs():
        push_blob(client, server.url, repo, blob)
    push_manifest(client, server.url, repo, referrer.digest, referrer.manifest, referrer.media_type)


def put_tags(client: httpx.Client, server: RunningServer, repo: str, image: Image, tags: list[str]) -> None:
    """The same manifest (already in `repo`) under every tag, one PUT each over one connection."""
    for tag in tags:
        push_manifest(client, server.url, repo, tag, image.manifest, image.media_type)


def mount_copies(client: httpx.Client, server: RunningServer, source: str, image: Image, repos: list[str]) -> None:
    """`image` (already in `source`) into every repository of `repos`: its blobs mounted, its manifest PUT as v1."""
    for repo in repos:
        for blob in image.blobs():
            r = client.post(f"{server.url}/v2/{repo}/blobs/uploads/", params={"mount": blob.digest, "from": source})
            assert r.status_code == 201, f"mount of {blob.digest} into {repo}: {r.status_code} {r.text}"
        push_manifest(client, server.url, repo, "v1", image.manifest, image.media_type)


# -- what skopeo says is there -------------------------------------------------------------------------
def manifest(skopeo: Skopeo, server: RunningServer, reference: str) -> tuple[str, dict[str, Any]]:
    """The digest and parsed body of the manifest `reference` names, as the registry serves it to skopeo."""
    raw = skopeo.inspect_raw(docker_ref(server, reference))
    return sha256(raw), json.loads(raw)


def image_size(body: dict[str, Any]) -> int:
    """What a pull of one image manifest downloads besides manifests: its config and its layers."""
    return int(body["config"]["size"]) + sum(int(layer["size"]) for layer in body["layers"])


def is_attestation(entry: dict[str, Any]) -> bool:
    return (entry.get("annotations") or {}).get(ATTESTATION_TYPE) == "attestation-manifest"


def expected_size(skopeo: Skopeo, server: RunningServer, repo: str, body: dict[str, Any]) -> int:
    """A tag row's size: an image's own, or for an index the sum over its platform manifests (no attestations)."""
    if "manifests" not in body:
        return image_size(body)
    return sum(image_size(manifest(skopeo, server, f"{repo}@{entry['digest']}")[1])
               for entry in body["manifests"] if not is_attestation(entry))
