"""The facade the registry talks to: `Storage` (the whole store) and `Repository` (one name)."""

from __future__ import annotations

from typing import Iterator

from ocispec.reference import validate_repository_name

from . import paths
from .blobs import BlobStore, RepositoryBlobs
from .driver.base import StorageDriver
from .errors import PathNotFound
from .manifests import ManifestStore
from .referrers import ReferrerStore
from .tags import TagStore
from .uploads import UploadStore


class Repository:
    """Everything about one repository. Creating one validates the name; it does not touch storage."""

    def __init__(self, storage: "Storage", name: str) -> None:
        self.name = validate_repository_name(name)
        self.storage = storage
        self.blobs = RepositoryBlobs(storage.blobs, name)
        self.manifests = ManifestStore(storage.driver, storage.blobs, name)
        self.tags: TagStore = self.manifests.tags
        self.referrers: ReferrerStore = self.manifests.referrers

    @property
    def uploads(self) -> UploadStore:
        return self.storage.uploads


class Storage:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self.blobs = BlobStore(driver)
        self.uploads = UploadStore(driver, self.blobs)

    def repository(self, name: str) -> Repository:
        return Repository(self, name)

    def repositories(self) -> list[str]:
        """Every repository that has manifests, sorted (the catalog). Derived from the tree."""
        return sorted(self._walk_repositories(paths.REPOSITORIES, ""))

    def _walk_repositories(self, key: str, name: str) -> Iterator[str]:
        try:
            children = self.driver.list(key)
        except PathNotFound:
            return
        for child in children:
            leaf = child.rsplit("/", 1)[1]
            if leaf == "_manifests" and name:
                yield name
            elif not leaf.startswith("_"):
                yield from self._walk_repositories(child, f"{name}/{leaf}" if name else leaf)

    def all_repository_dirs(self) -> list[str]:
        """Every repository directory, with or without manifests (uploads may exist before any
        manifest); used by maintenance jobs."""
        return sorted(self._walk_dirs(paths.REPOSITORIES, ""))

    def _walk_dirs(self, key: str, name: str) -> Iterator[str]:
        try:
            children = self.driver.list(key)
        except PathNotFound:
            return
        is_repo = False
        for child in children:
            leaf = child.rsplit("/", 1)[1]
            if leaf.startswith("_"):
                is_repo = True
            else:
                yield from self._walk_dirs(child, f"{name}/{leaf}" if name else leaf)
        if is_repo and name:
            yield name

    def purge_uploads(self, older_than_seconds: float) -> int:
        return self.uploads.purge(self.all_repository_dirs(), older_than_seconds)
