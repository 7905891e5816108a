"""Manifests recently read or stored, kept in memory by (repository, digest): their bytes and the
media type the repository's revision was pushed with. A manifest HEAD or GET then costs the
checks that say whether it is visible (a tag's link, the revision's link), not reading it again.

What is cached never decides visibility: `ManifestStore.get` checks the revision link on every
read (on S3 a link seen lately is believed, storage.recent_links), so a deleted manifest is
unknown as soon as a read no longer believes its link. What is cached does not go
stale: the bytes are their digest's, and the media type is what the push read from them (their
Content-Type only decides where the manifest's own fields leave the type open); a push forgets
the entry in its process all the same. Bounded by the bytes it holds; the least recently used go
first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from ocispec.digest import Digest

if TYPE_CHECKING:
    from .manifests import StoredManifest

#: What a cache holds at most, by default (manifests are a few KiB; an index of many platforms more).
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
#: A manifest larger than this is read each time (it would push out hundreds of others).
MAX_ENTRY_BYTES = 1024 * 1024


class ManifestCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, Digest], StoredManifest] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, name: str, digest: Digest) -> StoredManifest | None:
        with self._lock:
            stored = self._entries.get((name, digest))
            if stored is not None:
                self._entries.move_to_end((name, digest))
            return stored

    def put(self, name: str, stored: StoredManifest) -> None:
        if stored.size > MAX_ENTRY_BYTES or stored.size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop((name, stored.digest), None)
            if old is not None:
                self._bytes -= old.size
            self._entries[(name, stored.digest)] = stored
            self._bytes += stored.size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.size

    def forget(self, name: str, digest: Digest) -> None:
        with self._lock:
            old = self._entries.pop((name, digest), None)
            if old is not None:
                self._bytes -= old.size
