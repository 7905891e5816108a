"""One request's bytes appended to an upload (`UploadSession`), and the running hashes of
uploads kept in process memory between requests (`RunningHashes`), each valid for exactly the
state that the session which hashed the bytes saved (storage.uploads, storage.upload_state).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable

from ocispec.digest import DEFAULT_ALGORITHM, Digest, Hasher, new_hasher

from .driver.base import FileWriter, WriterState


class RunningHashes:
    """In-process running hashes, keyed by upload id, each valid for exactly one saved state: its
    size and the token the session that saved it wrote into it (None where the driver keeps the
    writer's state: files).

    The token makes a hasher meet only the bytes it hashed: a state another session saved (on
    another replica, or on this one with two sessions' closes interleaved) carries another token.
    On disk there is none, and the size alone is enough: every session appends to the one data
    file, so another session's bytes make it longer than any hasher of this one. A fresh hasher is
    handed out only for an upload nothing was saved to (size 0, no token). A session takes its
    entry out while it writes, so two concurrent sessions here cannot share a hasher.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._entries: OrderedDict[str, tuple[int, str | None, Hasher]] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def take(self, upload_id: str, size: int, token: str | None) -> Hasher | None:
        with self._lock:
            entry = self._entries.pop(upload_id, None)
        if entry is not None and entry[0] == size and entry[1] == token:
            return entry[2]
        return new_hasher(DEFAULT_ALGORITHM) if size == 0 and token is None else None

    def give_back(self, upload_id: str, size: int, token: str | None, hasher: Hasher) -> None:
        with self._lock:
            self._entries[upload_id] = (size, token, hasher)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def forget(self, upload_id: str) -> None:
        with self._lock:
            self._entries.pop(upload_id, None)


#: Saves a closed session's writer state in the upload's state: (state, new size, token).
Keep = Callable[[WriterState, int, str], None]


class UploadSession:
    """Appends one request's bytes to an upload. Use `write` repeatedly, then `close` (or `abort`)."""

    def __init__(self, writer: FileWriter, hasher: Hasher | None, upload_id: str, cache: RunningHashes,
                 token: str | None, keep: Keep) -> None:
        self._writer = writer
        self._hasher = hasher
        self._id = upload_id
        self._cache = cache
        self._token = token  # of the state this session continues, until it saves one of its own
        self._keep = keep

    @property
    def size(self) -> int:
        return self._writer.size

    @property
    def upload_id(self) -> str:
        return self._id

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._writer.write(data)
        if self._hasher is not None:
            self._hasher.update(data)

    def digest(self, algorithm: str = DEFAULT_ALGORITHM) -> Digest | None:
        """The digest of every byte of the upload so far when this session saw them all (its running
        hash), else None: then only `UploadStore.complete` can tell, by reading them back."""
        if self._hasher is None or algorithm != DEFAULT_ALGORITHM:
            return None
        return Digest.from_hasher(algorithm, self._hasher)  # hexdigest() leaves the hash running

    def close(self) -> int:
        """Persist the bytes written; returns the upload's new size."""
        self._writer.close()
        saved = self._writer.saved_state()
        if saved is not None:  # the driver handed its state over (S3): it goes into the upload's state
            self._token = secrets.token_hex(8)
            self._keep(saved, self._writer.size, self._token)
        if self._hasher is not None:
            self._cache.give_back(self._id, self._writer.size, self._token, self._hasher)
            self._hasher = None  # a second close gives nothing back twice
        return self._writer.size

    def abort(self) -> None:
        """Discard the upload's bytes, this session's and every earlier one's (the upload's state
        stays: `UploadStore.cancel` removes it)."""
        self._hasher = None
        self._cache.forget(self._id)
        self._writer.cancel()
