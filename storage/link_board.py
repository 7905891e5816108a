"""What the processes of one `registry serve` saw of links and what they deleted, in one
memory-mapped file they all map (storage.recent_links): a link one worker found is believed by
every worker, and a link deleted through any worker is believed by none from then on.

The file holds:

- a secret (16 random bytes) that keys every hash below, so nobody can choose names whose
  sightings or counters meet another repository's;
- the board's own counter and one counter per repository slot (a keyed hash of the name): a delete
  moves its repository's (a delete above repositories moves the board's own). Moves take a lock
  (the file's byte range and a thread lock), so a counter only ever goes up: a remembered mark
  can never come back;
- a table of sightings, one per slot of a keyed hash of the link key (a newer sighting takes the
  place of whatever was there): when the look that found it began, the two counters as they were
  before that look, and a check word, a keyed hash of the key and those three fields. A reader
  believes an entry only if the check word is the one its own key and the fields it read give, so
  an entry of another key, or one two writers mixed, or one read half-written, is not believed
  (at worst a sighting is looked at again); then only while both counters are unchanged.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import secrets
import struct
import threading
from pathlib import Path

#: Repository counters; names that share one forget each other's links more often than needed.
REPOSITORY_SLOTS = 4096
#: Sightings kept at most (direct-mapped: two keys on one slot take turns).
SIGHTING_SLOTS = 1 << 17
_WORD = struct.Struct("<Q")
_SIGHTING = struct.Struct("<QdQQ")  # check word (0: empty), began (clock seconds), board counter, repository counter
_SECRET_SIZE = 16
_COUNTERS = _SECRET_SIZE
_SIGHTINGS = _COUNTERS + _WORD.size * (1 + REPOSITORY_SLOTS)
_SIZE = _SIGHTINGS + _SIGHTING.size * SIGHTING_SLOTS

#: The board's counter and a repository's, as they were before a look.
Mark = tuple[int, int]


class LinkBoard:
    def __init__(self, memory: mmap.mmap, fd: int | None = None) -> None:
        """`fd`: the board's file, kept open for the counters' lock (None: a private board)."""
        self._memory = memory
        self._fd = fd
        self._secret = bytes(memory[:_SECRET_SIZE])
        self._moving = threading.Lock()

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
            return cls(mmap.mmap(fd, _SIZE), fd)
        except BaseException:
            os.close(fd)
            raise

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
        _SIGHTING.pack_into(self._memory, self._slot(key), self._check(key, began, *mark), began, *mark)

    def believes(self, key: str, name: str, now: float, ttl: float) -> bool:
        """Whether a sighting of `key` (a link of `name`) began less than `ttl` before `now` and
        nothing of `name` was deleted since."""
        check, began, board, repository = _SIGHTING.unpack_from(self._memory, self._slot(key))
        if check == 0 or check != self._check(key, began, board, repository):
            return False
        return now - began < ttl and (board, repository) == self.mark(name)

    # -- layout ----------------------------------------------------------------------------------
    def _word(self, offset: int) -> int:
        value: int = _WORD.unpack_from(self._memory, offset)[0]
        return value

    def _move(self, offset: int) -> None:
        with self._moving:  # the threads of this process
            if self._fd is not None:  # the other processes
                fcntl.lockf(self._fd, fcntl.LOCK_EX, _WORD.size, offset)
            try:
                _WORD.pack_into(self._memory, offset, (self._word(offset) + 1) & 0xFFFF_FFFF_FFFF_FFFF)
            finally:
                if self._fd is not None:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN, _WORD.size, offset)

    def _hash(self, *parts: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(b"\0".join(parts), digest_size=8, key=self._secret).digest(), "little")

    def _repository(self, name: str) -> int:
        return _COUNTERS + _WORD.size * (1 + self._hash(b"repository", name.encode()) % REPOSITORY_SLOTS)

    def _slot(self, key: str) -> int:
        return _SIGHTINGS + _SIGHTING.size * (self._hash(b"slot", key.encode()) % SIGHTING_SLOTS)

    def _check(self, key: str, began: float, board: int, repository: int) -> int:
        fields = struct.pack("<dQQ", began, board, repository)
        return self._hash(b"sighting", key.encode(), fields) or 1  # never 0: 0 is an empty slot
