"""Links the workers of a server saw lately, so that serving a blob or a manifest from S3 costs
the GET of its bytes, not also a HEAD of the repository's link every time
(`storage.link_cache_seconds`).

What it trades, and what it does not:

- A link deleted by another replica, or by `registry gc` run apart, is still believed for at most
  `ttl` seconds after a look found it. One deleted through any worker of this `registry serve` is
  believed by none of them from then on: `Storage` wraps its driver in a `DeleteNotifyingDriver`
  (storage.driver.notifying) that tells `forget_deleted` of every delete, so no code path can
  forget to forget, and the workers share one `LinkBoard` (storage.link_board): what one of them
  found, all of them believe, and a delete moves a mark every remembered link must still carry.
- Only what serves content asks it: `RepositoryBlobs`' `open`, `open_sized`, `url_for` and
  `stat_served` on a `serving` view, and `ManifestStore.get` on a `serving` one. A blob HEAD (how
  push clients decide to upload), a push's checks and the sweep protocol with garbage collection
  (storage.sweeping) look at links themselves.
- A blob's bytes are never remembered: one whose bytes a collection removed is unknown however
  recently its link was seen (the GET of the bytes finds nothing).

With `ttl` 0 it remembers nothing and every question is a look (`NO_MEMORY`: the filesystem
driver's case, where a link check costs microseconds, and every view that must look).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import paths
from .driver.base import DriverCapabilities
from .link_board import LinkBoard


class RecentLinks:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic, board: LinkBoard | None = None) -> None:
        """`clock` must read alike in every process sharing `board` (`time.monotonic` is the
        system's); without a board this process keeps its own."""
        self.ttl = ttl
        self._clock = clock
        self._board = (board or LinkBoard.private()) if ttl > 0 else None

    def present(self, key: str, look: Callable[[], bool]) -> bool:
        """Whether the link at `key` is there: believed if a look found it within `ttl` and no
        process of this server deleted a link of its repository since, else `look()` (which asks
        the driver) decides, and a yes is remembered."""
        board, scope = self._board, self._scope(key)
        if board is None or scope is None:
            return look()
        mark = board.mark(scope[0])  # before the look: a delete during it moves the mark
        began = self._clock()  # the age counts from before the look, however long it takes
        if board.believes(key, scope[0], began, self.ttl):
            return True
        if not look():
            return False
        board.saw(key, began, mark)
        return True

    def written(self, key: str, write: Callable[[], object]) -> None:
        """Run `write` (which puts the link at `key`) and remember the link as seen."""
        board, scope = self._board, self._scope(key)
        if board is None or scope is None:
            write()
            return
        mark, began = board.mark(scope[0]), self._clock()
        write()
        board.saw(key, began, mark)

    def forget_deleted(self, key: str) -> None:
        """`key` was deleted (an object, or everything below a prefix): nothing it may have held is
        believed any more, by any process sharing the board."""
        board, scope = self._board, self._scope(key)
        if board is None or scope is None:
            return
        name, nested = scope
        if nested:
            board.moved_all()
        else:
            board.moved(name)

    def _scope(self, key: str) -> tuple[str, bool] | None:
        """Whose links `key` is or holds (`paths.link_scope`); None when nothing is remembered."""
        return paths.link_scope(key) if self._board is not None else None


def remembers_links(capabilities: DriverCapabilities, seconds: float) -> bool:
    """Whether a store on a driver with `capabilities` remembers links for `seconds`
    (`storage.link_cache_seconds`): only where a check is a round trip (no `fast_small_reads`)."""
    return seconds > 0 and not capabilities.fast_small_reads


#: The memory that remembers nothing: every question is a look (a view that must look, the disk).
NO_MEMORY = RecentLinks(0.0)
