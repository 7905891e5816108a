"""The one place storage keys are built. The layout, identical on every driver:

    v1/blobs/<alg>/<hex[0:2]>/<hex>/data                           every blob once (global CAS)
    v1/repositories/<name>/_layers/<alg>/<hex>/link                this repo may serve that blob
    v1/repositories/<name>/_manifests/revisions/<alg>/<hex>/link   a manifest of this repo
    v1/repositories/<name>/_manifests/revisions/<alg>/<hex>/mediatype   its pushed Content-Type
    v1/repositories/<name>/_manifests/tags/<tag>/current/link      tag → manifest digest
    v1/repositories/<name>/_referrers/<salg>/<shex>/<alg>/<hex>    descriptor JSON of a referrer
    v1/repositories/<name>/_uploads/<id>/data                      bytes received so far
    v1/repositories/<name>/_uploads/<id>/startedat                 upload state (JSON)
    v1/repositories/<name>/_uploads/<id>/verifying                 bytes being verified (disk)

A link's content is the digest it points at. Manifests are stored as blobs in the CAS too.
Repository names are validated here (defence in depth: handlers validate first), so no key can
leave the root: names, tags, digests and upload ids all have grammars without `.`-only or `/`-led
components.
"""

from __future__ import annotations

import re

from ocispec.digest import Digest
from ocispec.reference import validate_repository_name, validate_tag

ROOT = "v1"
BLOBS = f"{ROOT}/blobs"
REPOSITORIES = f"{ROOT}/repositories"

UPLOAD_ID_PATTERN = re.compile(r"^[a-zA-Z0-9-]{8,64}$")


def blob_dir(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def blob_data(digest: Digest) -> str:
    return f"{blob_dir(digest)}/data"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{validate_repository_name(name)}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{repository(name)}/_layers/{digest.algorithm}/{digest.hex}/link"


def layers(name: str) -> str:
    return f"{repository(name)}/_layers"


def manifests(name: str) -> str:
    return f"{repository(name)}/_manifests"


def manifest_revision(name: str, digest: Digest) -> str:
    return f"{manifests(name)}/revisions/{digest.algorithm}/{digest.hex}"


def manifest_revision_link(name: str, digest: Digest) -> str:
    return f"{manifest_revision(name, digest)}/link"


def manifest_media_type(name: str, digest: Digest) -> str:
    return f"{manifest_revision(name, digest)}/mediatype"


def manifest_revisions(name: str) -> str:
    return f"{manifests(name)}/revisions"


def tags(name: str) -> str:
    return f"{manifests(name)}/tags"


def tag(name: str, tag_name: str) -> str:
    return f"{tags(name)}/{validate_tag(tag_name)}"


def tag_current_link(name: str, tag_name: str) -> str:
    return f"{tag(name, tag_name)}/current/link"


def referrers(name: str, subject: Digest) -> str:
    return f"{repository(name)}/_referrers/{subject.algorithm}/{subject.hex}"


def referrer(name: str, subject: Digest, digest: Digest) -> str:
    return f"{referrers(name, subject)}/{digest.algorithm}/{digest.hex}"


def is_upload_key(key: str) -> bool:
    """Whether `key` lies in some repository's `_uploads` area (repository name components cannot
    start with `_`, so the component can only be that data directory)."""
    return key.startswith(f"{REPOSITORIES}/") and "_uploads" in key.split("/")


def uploads(name: str) -> str:
    return f"{repository(name)}/_uploads"


def upload(name: str, upload_id: str) -> str:
    if not UPLOAD_ID_PATTERN.fullmatch(upload_id):
        raise ValueError(f"invalid upload id {upload_id!r}")
    return f"{uploads(name)}/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload(name, upload_id)}/data"


def upload_verifying(name: str, upload_id: str) -> str:
    return f"{upload(name, upload_id)}/verifying"


def upload_state(name: str, upload_id: str) -> str:
    return f"{upload(name, upload_id)}/startedat"
