"""The listing index: the catalog and every repository's tag list as small marker objects, so a
page of `GET /v2/_catalog` or `tags/list` is one driver `list_page` (one S3 listing), whatever the
number of repositories or tags (the layout and its ordering: storage.index_keys).

The tree (`v1/repositories/...`) stays the truth; a marker says "this repository has manifests" or
"this tag resolves". Markers are empty objects, written with idempotent puts and removed with
deletes that do not mind a missing key, so replicas write them concurrently without coordination.
The order of writes keeps the index behind the tree, never ahead:

- a push writes the tree first (the revision link, the tag link), then the marker, then checks the
  tree still holds what the marker says and removes the marker if a delete took it meanwhile;
- a delete removes the marker first, then the tree, then the marker once more (a push that read the
  tree before the delete may have put it back in between); the catalog's marker goes only with a
  repository's last revision, and comes back if a push added one meanwhile.

A crash between the two writes leaves a tree entry without its marker (not listed until the next
push or delete of it, `registry check --repair` or a rebuild); docs/lifecycle.md says which
windows remain. The first listing of a store that was never indexed builds it (`built_at`,
`Storage.listing_ready`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from . import index_keys, paths
from .driver.base import StorageDriver
from .errors import PathNotFound
from .links import object_exists

#: Keys asked for at once when looking for any other revision of a repository (its link and, for
#: some, a media type file: up to two keys per revision).
_REVISION_PROBE = 16


class ListingIndex:
    """The markers of one store; stateless apart from the driver, so every view may make one."""

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    # -- reading ---------------------------------------------------------------------------------
    def built_at(self) -> float | None:
        """When the index was last rebuilt from the tree; None if never (the next listing builds it)."""
        try:
            return float(json.loads(self.driver.get(index_keys.INDEX_BUILT))["built_at"])
        except PathNotFound:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: as if never built, so it is rebuilt

    def mark_built(self, when: float) -> None:
        self.driver.put(index_keys.INDEX_BUILT, json.dumps({"built_at": when}).encode())

    def repositories(self, last: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` repository names after `last` (any string, as the API's `last`), sorted,
        and whether more follow."""
        start = index_keys.index_repositories_after(last) if last else ""
        return self._page(index_keys.INDEX_REPOSITORIES, start, index_keys.index_repository_name, last, limit)

    def tags(self, name: str, last: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` tags of `name` after `last`, sorted, and whether more follow."""
        start = index_keys.index_tags_after(name, last) if last else ""
        prefix = index_keys.index_tags(name)
        below = f"{prefix}/"
        return self._page(prefix, start, lambda key: index_keys.index_tag_below(below, key), last, limit)

    def _page(self, prefix: str, start: str, decode: Callable[[str], str | None], last: str | None,
              limit: int) -> tuple[list[str], bool]:
        # One more than the page tells whether a next page exists (the `Link` header). Debris and
        # names not after `last` (a `last` that is no name starts a little early) are skipped.
        wanted = limit + 1
        found: list[str] = []
        while len(found) < wanted:
            asked = wanted - len(found)
            keys = self.driver.list_page(prefix, start, asked)
            for key in keys:
                name = decode(key)
                if name is not None and (not last or name > last):
                    found.append(name)
            if len(keys) < asked:
                break
            start = keys[-1]
        return found[:limit], len(found) > limit

    # -- the catalog -----------------------------------------------------------------------------
    def add_repository(self, name: str, revision: str | None = None) -> None:
        """`name` has a manifest now (its revision link is written; `revision` is that link's key,
        checked first as the cheapest proof that it still has one)."""
        self.driver.put(*self.repository_marker(name))
        self.repository_marked(name, revision)

    @staticmethod
    def repository_marker(name: str) -> tuple[str, bytes]:
        """The write `add_repository` makes first, for a caller that makes it durable together with
        its own (`StorageDriver.put_many`), then calls `repository_marked`."""
        return index_keys.index_repository(name), b""

    def repository_marked(self, name: str, revision: str | None = None) -> None:
        """The rest of `add_repository`, once its marker is written: taken back if `name` has no
        manifest after all (its manifests were deleted meanwhile)."""
        if revision is not None and object_exists(self.driver, revision):
            return
        if not self.has_revision(name):
            self.driver.delete_many([index_keys.index_repository(name)])

    def removing_revision(self, name: str, revision_link: str, remove: Callable[[], bool]) -> bool:
        """Run `remove` (which deletes the revision whose link is `revision_link`) keeping the
        catalog's marker exact; returns what `remove` returned."""
        last = not self.has_revision(name, besides=revision_link)
        marker = index_keys.index_repository(name)
        if last:
            self.driver.delete_many([marker])  # before the tree: never listed without manifests
        removed = remove()
        # Looked at again whatever `last` said: another delete may have taken the other revisions
        # meanwhile, a push may have added one or put the marker back.
        if not self.has_revision(name):
            self.driver.delete_many([marker])
        elif last:
            self.add_repository(name)
        return removed

    def has_revision(self, name: str, besides: str | None = None) -> bool:
        """Whether `name` has a manifest revision link (other than the one at `besides`), from a
        listing of its revisions that stops at the first."""
        prefix = paths.manifest_revisions(name)
        start = ""
        while True:
            keys = self.driver.list_page(prefix, start, _REVISION_PROBE)
            if any(paths.manifest_revision_owner(key) is not None and key != besides for key in keys):
                return True
            if len(keys) < _REVISION_PROBE:
                return False
            start = keys[-1]

    # -- tags ------------------------------------------------------------------------------------
    def add_tag(self, name: str, tag: str, resolves: Callable[[], bool]) -> None:
        """`tag` of `name` was just set; `resolves` tells whether it resolves now (read after the
        marker is written, so a delete of the tag or of its manifest meanwhile is seen)."""
        self.driver.put(*self.tag_marker(name, tag))
        self.tag_marked(name, tag, resolves)

    @staticmethod
    def tag_marker(name: str, tag: str) -> tuple[str, bytes]:
        """The write `add_tag` makes first (as `repository_marker`), then `tag_marked`."""
        return index_keys.index_tag(name, tag), b""

    def tag_marked(self, name: str, tag: str, resolves: Callable[[], bool]) -> None:
        """The rest of `add_tag`, once its marker is written."""
        if not resolves():
            self.driver.delete_many([index_keys.index_tag(name, tag)])  # deleted meanwhile, or set to what is not here

    def removing_tag(self, name: str, tag: str, remove: Callable[[], bool]) -> bool:
        """Run `remove` (which deletes the tag from the tree) keeping its marker exact."""
        marker = index_keys.index_tag(name, tag)
        self.driver.delete_many([marker])
        removed = remove()
        self.driver.delete_many([marker])
        return removed
