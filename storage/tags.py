"""Tags: `_manifests/tags/<tag>/current/link` holds the digest a tag points at.

A tag exists only while it resolves: its link is readable and names a manifest revision this
repository links. A crash can leave a tag directory without its link (killed while writing it) and a
racing delete can leave a link to a revision that is gone; neither is listed, resolved or counted.
Setting and deleting a tag keeps its marker in the listing index (storage.listing) exact, and
`page` lists from there: a page of tags costs one listing, not a read of every tag.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from ocispec.digest import Digest
from ocispec.reference import is_tag

from . import paths
from .driver.base import StorageDriver
from .errors import CorruptLink, NameUnknown, PathNotFound, TagUnknown
from .links import delete_quietly, link_content, link_exists, read_link
from .listing import ListingIndex

T = TypeVar("T")

#: Tags counted per listing of the index.
_COUNT_PAGE = 1000
#: Tags resolved at once on a driver whose small reads are network round trips (S3).
_RESOLVE_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class TagInfo:
    """What a tag points at and when its link was last written (`TagStore.set`), in seconds since
    the epoch as the backend records it (whole seconds on some S3 servers)."""

    digest: Digest
    updated: float


class TagStore:
    def __init__(self, driver: StorageDriver, name: str) -> None:
        self.driver = driver
        self.name = name
        self.index = ListingIndex(driver)

    def set(self, tag: str, digest: Digest) -> None:
        """Point `tag` at `digest`. The link is rewritten even when it already names `digest`, so
        its `stat().updated` moves: a pull-through cache records so when it last confirmed a tag."""
        self.set_all((tag,), digest)

    def set_all(self, tags: Sequence[str], digest: Digest, along: Sequence[tuple[str, bytes]] = ()) -> None:
        """`set` each of `tags`: the writes `along` (a push's catalog marker), then each link and
        its marker in the listing index, durable together (`StorageDriver.put_many`: one flush on
        disk); a marker whose tag was deleted meanwhile (or set to what is not here) is taken back."""
        writes = list(along)
        for tag in tags:
            writes.append((paths.tag_current_link(self.name, tag), link_content(digest)))
            writes.append(self.index.tag_marker(self.name, tag))
        self.driver.put_many(writes)
        for tag in tags:
            self.index.tag_marked(self.name, tag, self._resolves(tag))

    def _resolves(self, tag: str) -> Callable[[], bool]:
        link_key = paths.tag_current_link(self.name, tag)
        return lambda: self._target(link_key) is not None

    def stat(self, tag: str) -> TagInfo:
        """The digest `tag` points at and when it was last set; TagUnknown unless it resolves."""
        link_key = paths.tag_current_link(self.name, tag)
        digest = self._target(link_key)
        if digest is not None:
            try:
                return TagInfo(digest, self.driver.stat(link_key).modified)
            except PathNotFound:
                pass  # deleted since it was read
        raise TagUnknown(f"manifest unknown: tag {tag!r} not found in {self.name}", tag=tag)

    def find(self, tag: str) -> TagInfo | None:
        """`stat`, or None where it would raise TagUnknown (no such tag, or deleted meanwhile)."""
        try:
            return self.stat(tag)
        except TagUnknown:
            return None

    def resolve(self, tag: str) -> Digest:
        """The digest `tag` points at; TagUnknown unless it resolves (module docstring)."""
        digest = self._target(paths.tag_current_link(self.name, tag))
        if digest is None:
            raise TagUnknown(f"manifest unknown: tag {tag!r} not found in {self.name}", tag=tag)
        return digest

    def target(self, tag: str) -> Digest:
        """The digest the tag's link names, not yet checked against the repository's revisions
        (`ManifestStore.get_tagged` checks that); TagUnknown when there is no usable link."""
        try:
            return read_link(self.driver, paths.tag_current_link(self.name, tag))
        except (PathNotFound, CorruptLink):
            raise TagUnknown(f"manifest unknown: tag {tag!r} not found in {self.name}", tag=tag) from None

    def delete(self, tag: str) -> None:
        if not self.discard(tag):
            raise TagUnknown(f"manifest unknown: tag {tag!r} not found in {self.name}", tag=tag)

    def discard(self, tag: str) -> bool:
        """Remove `tag` (its link and its marker) if it is there; whether it was."""
        key = paths.tag(self.name, tag)
        return self.index.removing_tag(self.name, tag, lambda: delete_quietly(self.driver, key))

    def list(self) -> builtins.list[str]:
        """Every tag that resolves, sorted lexically, read from the tree. NameUnknown when the
        repository has never had a manifest."""
        return sorted(self.resolved())

    def page(self, last: str | None, limit: int) -> tuple[builtins.list[str], bool]:
        """Up to `limit` tags after `last` (any string), as `list` has them, and whether more follow,
        from the listing index (which must have been built: `Storage.listing_ready`). NameUnknown
        when the repository has never had a manifest."""
        tags, more = self.index.tags(self.name, last, limit)
        if not tags and not link_exists(self.driver, paths.manifests(self.name)):
            raise NameUnknown(f"repository name not known to registry: {self.name}", name=self.name)
        return tags, more

    def count(self) -> int:
        """How many tags resolve, from the listing index (one listing per thousand; it must have been
        built: `Storage.listing_ready`)."""
        total, last = 0, None
        while True:
            tags, more = self.index.tags(self.name, last, _COUNT_PAGE)
            total += len(tags)
            if not more or not tags:
                return total
            last = tags[-1]

    def tags_of(self, digest: Digest) -> builtins.list[str]:
        """Every tag currently pointing at `digest`."""
        return sorted(tag for tag, target in self._resolved_or_none().items() if target == digest)

    def resolved(self) -> dict[str, Digest]:
        """tag → digest for every tag that resolves. NameUnknown when the repository has never had
        a manifest."""
        return self._resolved_or_none(missing_ok=False)

    def dated(self) -> dict[str, TagInfo]:
        """tag → what it points at and when it was last set, for every tag that resolves (a listing
        newest first sorts by it: a read and a stat a tag, one revision check a digest, no manifest).
        NameUnknown when the repository has never had a manifest."""
        revisions: dict[Digest, bool] = {}  # digest → whether its revision link is there (many tags share one)

        def info(tag: str) -> TagInfo | None:
            key = paths.tag_current_link(self.name, tag)
            try:
                digest = read_link(self.driver, key)
                modified = self.driver.head(key).modified
            except (PathNotFound, CorruptLink):
                return None  # no link (never finished, or deleted meanwhile), or debris
            known = revisions.get(digest)
            if known is None:
                known = revisions[digest] = link_exists(self.driver, paths.manifest_revision_link(self.name, digest))
            return TagInfo(digest, modified) if known else None

        return self._each_tag(info, missing_ok=False)

    def _resolved_or_none(self, missing_ok: bool = True) -> dict[str, Digest]:
        return self._each_tag(lambda tag: self._target(paths.tag_current_link(self.name, tag)), missing_ok)

    def _each_tag(self, read: Callable[[str], T | None], missing_ok: bool) -> dict[str, T]:
        """tag → `read(tag)` for every tag directory whose read is not None, concurrently on a driver
        whose small reads are round trips."""
        try:
            keys = self.driver.list(paths.tags(self.name))
        except PathNotFound:
            if not missing_ok and not link_exists(self.driver, paths.manifests(self.name)):
                raise NameUnknown(f"repository name not known to registry: {self.name}", name=self.name) from None
            return {}
        # Debris that is no tag (a stray file, a name outside the grammar) is not one.
        names = [key.rsplit("/", 1)[1] for key in keys]
        names = [name for name in names if is_tag(name)]
        if self.driver.capabilities.fast_small_reads or len(names) < 2:
            results = [read(tag) for tag in names]
        else:
            with ThreadPoolExecutor(max_workers=min(_RESOLVE_CONCURRENCY, len(names))) as pool:
                results = builtins.list(pool.map(read, names))
        return {tag: result for tag, result in zip(names, results, strict=True) if result is not None}

    def _target(self, link_key: str) -> Digest | None:
        """The digest of the tag link at `link_key` if it names a revision this repository links."""
        try:
            digest = read_link(self.driver, link_key)
        except (PathNotFound, CorruptLink):
            return None  # no link (a tag write that never finished, or deleted meanwhile), or debris
        if not link_exists(self.driver, paths.manifest_revision_link(self.name, digest)):
            return None
        return digest
