"""Link files: small objects whose content is the digest they point at."""

from __future__ import annotations

from ocispec.digest import Digest
from ocispec.errors import OCIValidationError

from .driver.base import StorageDriver
from .errors import CorruptLink, PathNotFound
from .paths import digest_from_parts


def write_link(driver: StorageDriver, key: str, digest: Digest) -> None:
    driver.put(key, link_content(digest))


def link_content(digest: Digest) -> bytes:
    """What a link to `digest` holds (for a `put_many` that writes it with other objects)."""
    return str(digest).encode()


def read_link(driver: StorageDriver, key: str) -> Digest:
    """The digest in a link; PathNotFound when there is no link, CorruptLink when it holds no digest."""
    raw = driver.get(key)
    try:
        return Digest.parse(raw.decode("ascii", "replace").strip())
    except OCIValidationError:
        raise CorruptLink(f"corrupt link at {key}", key=key) from None


def link_exists(driver: StorageDriver, key: str) -> bool:
    """Whether anything is at `key`: an object, an upload in progress, or a prefix with objects
    below it (`object_exists` for just an object, at a third of the cost on S3)."""
    try:
        driver.stat(key)
        return True
    except PathNotFound:
        return False


def object_exists(driver: StorageDriver, key: str) -> bool:
    """Whether a committed object (a link, a blob's data) is at `key`: one backend call (S3: one
    HEAD, where `link_exists`'s stat also looks for an upload in progress and a prefix)."""
    try:
        driver.head(key)
        return True
    except PathNotFound:
        return False


def delete_quietly(driver: StorageDriver, key: str) -> bool:
    """Delete if present; True when something was deleted."""
    try:
        driver.delete(key)
        return True
    except PathNotFound:
        return False


def digests_below(driver: StorageDriver, prefix: str) -> list[Digest]:
    """The digests a `<prefix>/<alg>/<hex>/…` tree names (layer links, manifest revisions);
    anything else lying there is ignored."""
    found: list[Digest] = []
    try:
        alg_keys = driver.list(prefix)
    except PathNotFound:
        return found
    for alg_key in alg_keys:
        try:
            hex_keys = driver.list(alg_key)
        except PathNotFound:
            continue  # removed meanwhile
        for hex_key in hex_keys:
            digest = digest_from_parts(alg_key.rsplit("/", 1)[1], hex_key.rsplit("/", 1)[1])
            if digest:
                found.append(digest)
    return found
