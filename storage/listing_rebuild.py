"""The listing index (storage.listing) compared with the tree, and rebuilt from it.

What the index should hold is read from the tree: one walk of the repositories finds every
revision link and every tag link, and each tag link is read to see whether it resolves (names a
revision of its repository). `differences` reports what the index lacks or holds in excess,
`rebuild` mends it and records when (`ListingIndex.built_at`). Both look again at the tree before
they report or remove anything about one entry, so a push or delete in flight meanwhile is neither
reported nor undone: a marker is added only through the same put-then-check a push makes, removed
only when the tree still says it must go.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from ocispec.digest import Digest

from . import index_keys, paths
from .driver.base import FileInfo, StorageDriver
from .errors import CorruptLink, PathNotFound
from .links import object_exists, read_link
from .listing import ListingIndex

#: Tag links read at once on a driver whose small reads are network round trips (S3).
_READ_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class IndexDifference:
    """One entry on which the index and the tree disagree: `missing` (the tree has it, the index
    does not list it) or not (the index lists what the tree does not have)."""

    repository: str
    tag: str | None
    missing: bool

    def __str__(self) -> str:
        what = f"tag {self.repository}:{self.tag}" if self.tag is not None else f"repository {self.repository}"
        return (f"the listing index misses {what}" if self.missing
                else f"the listing index names {what}, which the tree does not have")


@dataclass(frozen=True, slots=True)
class IndexRebuild:
    added: int
    removed: int


@dataclass(frozen=True, slots=True)
class _Entries:
    repositories: frozenset[str]
    tags: frozenset[tuple[str, str]]


def differences(driver: StorageDriver) -> list[IndexDifference]:
    """Where the index disagrees with the tree, each confirmed by a second look (module docstring)."""
    confirmed = []
    for difference in _compare(driver):
        if _still_differs(driver, difference):
            confirmed.append(difference)
    return confirmed


def rebuild(driver: StorageDriver, now: float | None = None) -> IndexRebuild:
    """Make the index what the tree says (module docstring) and record that it was built."""
    started = time.time() if now is None else now
    index = ListingIndex(driver)

    def mend(difference: IndexDifference) -> bool:
        # A marker is added as a push adds it (put, then the tree read again), which needs no look
        # beforehand; one is removed only if the tree still says so.
        if not difference.missing and not _still_differs(driver, difference):
            return False
        name, tag = difference.repository, difference.tag
        if tag is None:
            if difference.missing:
                index.add_repository(name)
            else:
                driver.delete_many([index_keys.index_repository(name)])
        elif difference.missing:
            index.add_tag(name, tag, partial(_resolves, driver, name, tag))
        else:
            driver.delete_many([index_keys.index_tag(name, tag)])
        return True

    found = list(_compare(driver))
    # Several at once on every driver: each marker is a durable write (an fsync on disk, a PUT on S3).
    with ThreadPoolExecutor(max_workers=_READ_CONCURRENCY) as pool:
        mended = list(pool.map(mend, found))
    added = sum(1 for difference, done in zip(found, mended, strict=True) if done and difference.missing)
    index.mark_built(started)
    return IndexRebuild(added, sum(mended) - added)


def _compare(driver: StorageDriver) -> Iterator[IndexDifference]:
    tree, listed = _tree(driver), _listed(driver)
    for name in sorted(tree.repositories - listed.repositories):
        yield IndexDifference(name, None, True)
    for name in sorted(listed.repositories - tree.repositories):
        yield IndexDifference(name, None, False)
    for name, tag in sorted(tree.tags - listed.tags):
        yield IndexDifference(name, tag, True)
    for name, tag in sorted(listed.tags - tree.tags):
        yield IndexDifference(name, tag, False)


def _tree(driver: StorageDriver) -> _Entries:
    """Every repository with a revision and every tag that resolves, from one walk of the tree."""
    revisions: set[tuple[str, Digest]] = set()
    tag_links: list[tuple[str, str]] = []
    for info in _walk(driver, paths.REPOSITORIES):
        revision = paths.manifest_revision_owner(info.key)
        if revision is not None:
            revisions.add(revision)
            continue
        tag = paths.tag_link_owner(info.key)
        if tag is not None:
            tag_links.append(tag)

    def resolves(owned: tuple[str, str]) -> bool:
        target = _target(driver, *owned)
        return target is not None and (owned[0], target) in revisions

    if driver.capabilities.fast_small_reads or len(tag_links) < 2:
        found = [resolves(owned) for owned in tag_links]
    else:
        with ThreadPoolExecutor(max_workers=_READ_CONCURRENCY) as pool:
            found = list(pool.map(resolves, tag_links))
    tags = frozenset(owned for owned, ok in zip(tag_links, found, strict=True) if ok)
    return _Entries(frozenset(name for name, _ in revisions), tags)


def _listed(driver: StorageDriver) -> _Entries:
    repositories = {name for info in _walk(driver, index_keys.INDEX_REPOSITORIES)
                    if (name := index_keys.index_repository_name(info.key)) is not None}
    tags = {owned for info in _walk(driver, index_keys.INDEX_TAGS)
            if (owned := index_keys.index_tag_owner(info.key)) is not None}
    return _Entries(frozenset(repositories), frozenset(tags))


def _still_differs(driver: StorageDriver, difference: IndexDifference) -> bool:
    """Whether the tree and the marker of this one entry still disagree as `difference` says."""
    name, tag = difference.repository, difference.tag
    if tag is None:
        in_tree = ListingIndex(driver).has_revision(name)
        marker = index_keys.index_repository(name)
    else:
        in_tree = _resolves(driver, name, tag)
        marker = index_keys.index_tag(name, tag)
    return in_tree == difference.missing and object_exists(driver, marker) != difference.missing


def _resolves(driver: StorageDriver, name: str, tag: str) -> bool:
    target = _target(driver, name, tag)
    return target is not None and object_exists(driver, paths.manifest_revision_link(name, target))


def _target(driver: StorageDriver, name: str, tag: str) -> Digest | None:
    try:
        return read_link(driver, paths.tag_current_link(name, tag))
    except (PathNotFound, CorruptLink):
        return None


def _walk(driver: StorageDriver, prefix: str) -> Iterator[FileInfo]:
    try:
        yield from driver.walk(prefix)
    except PathNotFound:
        return
