"""Tags: `_manifests/tags/<tag>/current/link` holds the digest a tag points at."""

from __future__ import annotations

import builtins

from ocispec.digest import Digest

from . import paths
from .driver.base import StorageDriver
from .errors import NameUnknown, PathNotFound, TagUnknown
from .links import delete_quietly, read_link, write_link


class TagStore:
    def __init__(self, driver: StorageDriver, name: str) -> None:
        self.driver = driver
        self.name = name

    def set(self, tag: str, digest: Digest) -> None:
        write_link(self.driver, paths.tag_current_link(self.name, tag), digest)

    def resolve(self, tag: str) -> Digest:
        try:
            return read_link(self.driver, paths.tag_current_link(self.name, tag))
        except PathNotFound:
            raise TagUnknown(f"manifest unknown: tag {tag!r} not found in {self.name}", tag=tag) from None

    def delete(self, tag: str) -> None:
        if not delete_quietly(self.driver, paths.tag(self.name, tag)):
            raise TagUnknown(f"manifest unknown: tag {tag!r} not found in {self.name}", tag=tag)

    def list(self) -> list[str]:
        """All tags, sorted lexically. NameUnknown when the repository has never had a manifest."""
        try:
            keys = self.driver.list(paths.tags(self.name))
        except PathNotFound:
            try:
                self.driver.stat(paths.manifests(self.name))
            except PathNotFound:
                raise NameUnknown(f"repository name not known to registry: {self.name}", name=self.name) from None
            return []
        return sorted(key.rsplit("/", 1)[1] for key in keys)

    def tags_of(self, digest: Digest) -> builtins.list[str]:
        """Every tag currently pointing at `digest`."""
        found: builtins.list[str] = []
        for tag in self.list() if self._has_tags() else []:
            try:
                if self.resolve(tag) == digest:
                    found.append(tag)
            except TagUnknown:
                continue  # deleted meanwhile
        return found

    def _has_tags(self) -> bool:
        try:
            self.driver.stat(paths.tags(self.name))
            return True
        except PathNotFound:
            return False
