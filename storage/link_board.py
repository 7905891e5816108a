"""What the processes of one `registry serve` saw of links and what they deleted, in one
memory-mapped file they all map (storage.recent_links): a link one worker found is believed by
every worker, and a link deleted through any worker is believed by none from then on.

The file holds:

- a secret (16 random bytes) that keys the hash of link keys, so nobody can choose names that
  collide with another repository's link;
- the board's own counter and one counter per repository slot (a hash of the repository name):
  a delete moves its repository's (a delete above repositories moves the board's own);
- a table of sightings, one entry per link-key hash slot (a newer sighting takes the place of
  whatever was there): the key's hash, when the look that found it began, and the two counters as
  they were before that look. An entry is believed only while both counters are unchanged.

Writes are plain stores of aligned 8-byte words, not atomic as a whole across processes. A
counter moved by two deletes at once may move by one instead of two, which still changes it, and
that is all a mark compares. An entry is written key-hash last and read key-hash first and last:
a reader that sees the same hash twice read the fields of a sighting of that very key (a
concurrent writer of another key clears the hash first), so the worst a race can do is make a
sighting be looked at again.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import secrets
import struct
import zlib
from pathlib import Path

#: Repository counters; names that share one forget each other's links more often than needed.
REPOSITORY_SLOTS = 4096
#: Sightings kept at most (direct-mapped: two keys on one slot take turns).
SIGHTING_SLOTS = 1 << 17
_WORD = struct.Struct("<Q")
_SIGHTING = struct.Struct("<QdQQ")  # key hash (0: empty), began (clock seconds), board counter, repository counter
_SECRET_SIZE = 16
_COUNTERS = _SECRET_SIZE
_SIGHTINGS = _COUNTERS + _WORD.size * (1 + REPOSITORY_SLOTS)
_SIZE = _SIGHTINGS + _SIGHTING.size * SIGHTING_SLOTS

#: The board's counter and a repository's, as they were before a look.
Mark = tuple[int, int]


class LinkBoard:
    def __init__(self, memory: mmap.mmap) -> None:
        self._memory = memory
        self._secret = bytes(memory[:_SECRET_SIZE])

    @classmethod
    def private(cls) -> LinkBoard:
        """A board only this process sees (one worker: nobody to share with)."""
        memory = mmap.mmap(-1, _SIZE)
        memory[:_SECRET_SIZE] = secrets.token_bytes(_SECRET_SIZE)
        return cls(memory)

    @classmethod
    def create(cls, path: Path) -> LinkBoard:
        """A new board in the file `path` (made anew, readable by its owner only), which other
        processes then `attach`."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _SIZE)
            os.pwrite(fd, secrets.token_bytes(_SECRET_SIZE), 0)
        finally:
            os.close(fd)
        return cls.attach(path)

    @classmethod
    def attach(cls, path: Path) -> LinkBoard:
        fd = os.open(path, os.O_RDWR)
        try:
            return cls(mmap.mmap(fd, _SIZE))
        finally:
            os.close(fd)  # the mapping keeps the file

    # -- deletes ---------------------------------------------------------------------------------
    def mark(self, name: str) -> Mark:
        """The counters a look at `name`'s links is remembered with (read before the look)."""
        return self._word(_COUNTERS), self._word(self._repository(name))

    def moved(self, name: str) -> None:
        """A link of `name` was deleted: nothing seen of `name` before is believed any more."""
        self._move(self._repository(name))

    def moved_all(self) -> None:
        """Links of many repositories were deleted (a repository and those below it, or more)."""
        self._move(_COUNTERS)

    # -- sightings -------------------------------------------------------------------------------
    def saw(self, key: str, began: float, mark: Mark) -> None:
        """A look that began at `began`, after the counters read `mark`, found the link at `key`."""
        hashed, at = self._sighting(key)
        _WORD.pack_into(self._memory, at, 0)  # readers of the slot meanwhile find nothing
        _SIGHTING.pack_into(self._memory, at, 0, began, *mark)
        _WORD.pack_into(self._memory, at, hashed)

    def believes(self, key: str, name: str, now: float, ttl: float) -> bool:
        """Whether a sighting of `key` (a link of `name`) began less than `ttl` before `now` and
        nothing of `name` was deleted since."""
        hashed, at = self._sighting(key)
        found, began, board, repository = _SIGHTING.unpack_from(self._memory, at)
        if found != hashed or self._word(at) != hashed:
            return False
        return now - began < ttl and (board, repository) == self.mark(name)

    # -- layout ----------------------------------------------------------------------------------
    def _word(self, offset: int) -> int:
        value: int = _WORD.unpack_from(self._memory, offset)[0]
        return value

    def _move(self, offset: int) -> None:
        _WORD.pack_into(self._memory, offset, (self._word(offset) + 1) & 0xFFFF_FFFF_FFFF_FFFF)

    @staticmethod
    def _repository(name: str) -> int:
        return _COUNTERS + _WORD.size * (1 + zlib.crc32(name.encode()) % REPOSITORY_SLOTS)

    def _sighting(self, key: str) -> tuple[int, int]:
        """The key's hash (never 0: 0 marks an empty slot) and its slot's offset."""
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._secret).digest()
        hashed = int.from_bytes(digest, "little") or 1
        return hashed, _SIGHTINGS + _SIGHTING.size * (hashed % SIGHTING_SLOTS)
