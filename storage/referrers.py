"""Referrers: for each subject digest, the descriptors of the manifests whose `subject` names it.

Stored as `_referrers/<subject alg>/<subject hex>/<alg>/<hex>` holding the referrer's descriptor
JSON (with `artifactType` and `annotations`), so the referrers API is one listing, and the whole
tree can be rebuilt from the manifests themselves.
"""

from __future__ import annotations

import json
from typing import Any

from ocispec.digest import Digest

from . import paths
from .driver.base import StorageDriver
from .errors import PathNotFound
from .links import delete_quietly, link_exists


class ReferrerStore:
    def __init__(self, driver: StorageDriver, name: str) -> None:
        self.driver = driver
        self.name = name

    def add(self, subject: Digest, descriptor: dict[str, Any]) -> None:
        digest = Digest.parse(descriptor["digest"])
        self.driver.put(paths.referrer(self.name, subject, digest), json.dumps(descriptor, sort_keys=True).encode())

    def remove(self, subject: Digest, digest: Digest) -> None:
        delete_quietly(self.driver, paths.referrer(self.name, subject, digest))

    def list(self, subject: Digest, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of the referrers of `subject`, optionally only those of one artifact type,
        in a stable order (by digest)."""
        found: list[dict[str, Any]] = []
        try:
            alg_keys = self.driver.list(paths.referrers(self.name, subject))
        except PathNotFound:
            return found
        for alg_key in alg_keys:
            try:
                entry_keys = self.driver.list(alg_key)
            except PathNotFound:
                continue
            for key in entry_keys:
                try:
                    descriptor = json.loads(self.driver.get(key))
                except (PathNotFound, ValueError):
                    continue  # removed meanwhile, or debris
                if artifact_type is not None and descriptor.get("artifactType") != artifact_type:
                    continue
                # The entry is written before the referrer's revision link; after a crash in
                # between, or a delete, it names a manifest the repository does not serve.
                revision = paths.manifest_revision_link(self.name, Digest.parse(descriptor["digest"]))
                if link_exists(self.driver, revision):
                    found.append(descriptor)
        return sorted(found, key=lambda d: d["digest"])
