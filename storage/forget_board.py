"""Counters that every process of one `registry serve` shares through one memory-mapped file, so
that a link deleted through any of its workers stops being believed by all of them at once
(storage.recent_links).

A delete moves the counter of the repository's slot (a hash of its name; a delete above
repositories moves the board's own counter, which every mark includes). What a process remembers
carries the mark it read before looking, and is believed only while the mark is unchanged. Moves
are plain read-and-write of 8 aligned bytes, not atomic across processes: two deletes at once may
move a slot by one instead of two, which still changes it, and that is all a mark compares.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from pathlib import Path

#: Repository slots; names that share one only forget each other more often than needed.
SLOTS = 4096
_COUNTER = struct.Struct("<Q")
#: The board's own counter (slot 0) and then the repositories'.
_SIZE = _COUNTER.size * (SLOTS + 1)

Mark = tuple[int, int]


class ForgetBoard:
    def __init__(self, memory: mmap.mmap) -> None:
        self._memory = memory

    @classmethod
    def private(cls) -> ForgetBoard:
        """A board only this process sees (one worker: nobody to tell)."""
        return cls(mmap.mmap(-1, _SIZE))

    @classmethod
    def create(cls, path: Path) -> ForgetBoard:
        """A new board in the file `path` (made empty), which other processes then `attach`."""
        with open(path, "wb") as f:
            f.truncate(_SIZE)
        return cls.attach(path)

    @classmethod
    def attach(cls, path: Path) -> ForgetBoard:
        fd = os.open(path, os.O_RDWR)
        try:
            return cls(mmap.mmap(fd, _SIZE))
        finally:
            os.close(fd)  # the mapping keeps the file

    def mark(self, name: str) -> Mark:
        """What a look at `name`'s links is remembered with (read before the look)."""
        return _COUNTER.unpack_from(self._memory, 0)[0], _COUNTER.unpack_from(self._memory, self._offset(name))[0]

    def moved(self, name: str) -> None:
        """A link of `name` was deleted: what any process remembered of `name` is no longer believed."""
        self._move(self._offset(name))

    def moved_all(self) -> None:
        """Links of many repositories were deleted (a repository and those below it, or more)."""
        self._move(0)

    def _move(self, offset: int) -> None:
        value = _COUNTER.unpack_from(self._memory, offset)[0]
        _COUNTER.pack_into(self._memory, offset, (value + 1) & 0xFFFF_FFFF_FFFF_FFFF)

    @staticmethod
    def _offset(name: str) -> int:
        return _COUNTER.size * (1 + zlib.crc32(name.encode()) % SLOTS)
