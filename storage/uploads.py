"""Resumable blob uploads whose state lives in storage, so any replica can continue any upload.

An upload is `_uploads/<id>/startedat` (JSON state) plus `_uploads/<id>/data` (bytes so far). The
size of `data` is the upload's offset. A sha256 of the bytes so far is kept in process memory while
this process has seen every byte (the common case: one client, one replica); when it has not, or
the digest uses another algorithm, `complete` re-hashes the data from storage instead.

Where writers do not append in place (S3), `complete` with the running hash verifies before
finishing anything, then finishes the bytes straight at their CAS key (`FileWriter.commit_to`:
on S3 a tail that never made a part is one PUT there). Otherwise the data is committed in place,
moved out of writers' reach where they append in place (files), verified (by the running hash or
read back) and moved. Either way nothing reaches the CAS unverified, and after success only the
state is deleted (one call). Blobs that arrive whole take no upload at all (storage.fill).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ocispec.digest import DEFAULT_ALGORITHM, Digest, Hasher, new_hasher

from . import paths
from .blobs import BlobInfo, BlobStore, RepositoryBlobs
from .driver.base import FileWriter, StorageDriver, iter_chunks
from .errors import (
    DigestInvalid,
    ObjectBusy,
    PathNotFound,
    SizeInvalid,
    UploadInvalid,
    UploadRangeInvalid,
    UploadUnknown,
)
from .links import delete_quietly

REHASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UploadStatus:
    id: str
    repository: str
    started_at: float
    size: int


class _HashCache:
    """In-process running hashes, keyed by upload id, each valid for exactly `size` bytes.

    A session takes its entry out while it writes, so two concurrent sessions on one upload cannot
    share a hasher: the second finds nothing and the upload falls back to re-hashing at the end.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._entries: OrderedDict[str, tuple[int, Hasher]] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def take(self, upload_id: str, size: int) -> Hasher | None:
        with self._lock:
            entry = self._entries.pop(upload_id, None)
        if entry is not None and entry[0] == size:
            return entry[1]
        return new_hasher(DEFAULT_ALGORITHM) if size == 0 else None

    def give_back(self, upload_id: str, size: int, hasher: Hasher) -> None:
        with self._lock:
            self._entries[upload_id] = (size, hasher)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def forget(self, upload_id: str) -> None:
        with self._lock:
            self._entries.pop(upload_id, None)


class UploadSession:
    """Appends one request's bytes to an upload. Use `write` repeatedly, then `close` (or `abort`)."""

    def __init__(self, writer: FileWriter, hasher: Hasher | None, upload_id: str, cache: _HashCache) -> None:
        self._writer = writer
        self._hasher = hasher
        self._id = upload_id
        self._cache = cache

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
        if self._hasher is not None:
            self._cache.give_back(self._id, self._writer.size, self._hasher)
        return self._writer.size

    def abort(self) -> None:
        """Discard the upload's bytes, this session's and every earlier one's (the upload's state
        stays: `UploadStore.cancel` removes it)."""
        self._hasher = None
        self._cache.forget(self._id)
        self._writer.cancel()


class UploadStore:
    def __init__(self, driver: StorageDriver, blobs: BlobStore) -> None:
        self.driver = driver
        self.blobs = blobs
        self._hashes = _HashCache()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, repository: str) -> UploadStatus:
        upload_id = str(uuid.uuid4())
        started = time.time()
        state = {"repository": repository, "startedat": started}
        self.driver.put(paths.upload_state(repository, upload_id), json.dumps(state).encode())
        return UploadStatus(upload_id, repository, started, 0)

    def status(self, repository: str, upload_id: str) -> UploadStatus:
        state = self.known(repository, upload_id)
        try:
            size = self.driver.stat(paths.upload_data(repository, upload_id)).size
        except PathNotFound:
            size = 0
        return UploadStatus(upload_id, repository, float(state.get("startedat", 0)), size)

    def known(self, repository: str, upload_id: str) -> dict[str, Any]:
        """The upload's saved state (one small read), or UploadUnknown: what every step checks
        first; its size (`status`) costs more calls and only some steps need it."""
        try:
            key = paths.upload_state(repository, upload_id)
        except ValueError:
            raise UploadUnknown(f"upload unknown: {upload_id[:80]}") from None
        try:
            state: dict[str, Any] = json.loads(self.driver.get(key))
        except PathNotFound:
            raise UploadUnknown(f"upload unknown: {upload_id}") from None
        if state.get("repository", repository) != repository:
            # The state lives below the repository it names, so this is a tree copied or moved by
            # hand: the upload belongs to the repository that started it, not to this one.
            raise UploadUnknown(f"upload unknown: {upload_id}")
        return state

    def open_session(self, repository: str, upload_id: str, expected_offset: int | None = None) -> UploadSession:
        """Begin appending. `expected_offset` (from a Content-Range) must equal the current size."""
        self.known(repository, upload_id)  # raises UploadUnknown
        writer = self.driver.writer(paths.upload_data(repository, upload_id), append=True)
        if expected_offset is not None and expected_offset != writer.size:
            writer.close()
            raise UploadRangeInvalid(
                f"chunk starts at {expected_offset} but the upload has {writer.size} bytes", writer.size)
        hasher = self._hashes.take(upload_id, writer.size)
        return UploadSession(writer, hasher, upload_id, self._hashes)

    def append(self, repository: str, upload_id: str, chunks: Iterable[bytes],
               expected_offset: int | None = None) -> int:
        """Synchronous convenience over open_session for callers that already have the bytes."""
        session = self.open_session(repository, upload_id, expected_offset)
        for chunk in chunks:
            session.write(chunk)
        return session.close()

    def complete(self, repository: str, upload_id: str, digest: Digest, expected_size: int | None = None) -> BlobInfo:
        """Verify the upload's bytes against `digest`, move them into the CAS and link them into
        the repository. On a mismatch nothing becomes visible, the upload is removed, and
        DigestInvalid is raised."""
        self.known(repository, upload_id)
        data_key = paths.upload_data(repository, upload_id)
        writer = self.driver.writer(data_key, append=True)
        size = writer.size
        try:
            if expected_size is not None and expected_size != size:
                raise SizeInvalid(f"upload has {size} bytes, expected {expected_size}")
            hasher = None
            if not self.driver.capabilities.appends_in_place and digest.algorithm == DEFAULT_ALGORITHM:
                hasher = self._hashes.take(upload_id, size)
            if hasher is not None:
                # This process saw every byte: verified before anything is finished, then the
                # bytes are finished straight into the CAS (on S3 a tail that never made a part
                # is one PUT there: no object under the upload, no copy).
                self._check(digest, Digest.from_hasher(digest.algorithm, hasher))
                cas_key = paths.blob_data(digest)
                RepositoryBlobs(self.blobs, repository).link_verified(
                    digest, size, lambda: writer.commit_to(cas_key), writer.cancel)
                return self._completed(repository, upload_id, digest, size)
        except (DigestInvalid, SizeInvalid):
            writer.close()
            self._remove(repository, upload_id)
            raise
        # Finish the appended object (on S3: complete the multipart upload; on disk: fsync), so it
        # can be read back for hashing and moved; an empty upload becomes an empty object.
        writer.commit()
        verified_key = self._out_of_writers_reach(repository, upload_id, data_key)
        try:
            self._check(digest, self._digest_of(upload_id, verified_key, size, digest.algorithm))
        except DigestInvalid:
            self._remove(repository, upload_id)
            raise
        RepositoryBlobs(self.blobs, repository).link_verified(
            digest, size, lambda: self.driver.move(verified_key, paths.blob_data(digest)),
            lambda: delete_quietly(self.driver, verified_key))
        return self._completed(repository, upload_id, digest, size)

    @staticmethod
    def _check(digest: Digest, actual: Digest) -> None:
        if actual != digest:
            raise DigestInvalid(f"digest mismatch: expected {digest}, got {actual}", digest=str(digest))

    def _completed(self, repository: str, upload_id: str, digest: Digest, size: int) -> BlobInfo:
        """Its bytes are in the CAS: only the upload's state is left (a writer racing this
        completion may leave data beside it, which the purge takes with the upload's directory)."""
        self._drop_state(repository, upload_id)
        return BlobInfo(digest, size)

    def discard_empty(self, repository: str, upload_id: str) -> None:
        """Remove an upload that holds no bytes (its blob came whole, straight into the CAS:
        storage.fill): one delete of its state."""
        self._drop_state(repository, upload_id)

    def _drop_state(self, repository: str, upload_id: str) -> None:
        """The upload's state and running hash go; nothing else of it is left to remove."""
        self._hashes.forget(upload_id)
        self.driver.delete_many([paths.upload_state(repository, upload_id)])

    def _out_of_writers_reach(self, repository: str, upload_id: str, data_key: str) -> str:
        """The key whose bytes get verified and adopted. Where a writer still open on the upload
        would keep appending to the very object a move takes (files), the bytes are first moved
        to a key no writer opens, so nothing can change between verification and adoption."""
        if not self.driver.capabilities.appends_in_place:
            return data_key
        verifying_key = paths.upload_verifying(repository, upload_id)
        try:
            self.driver.move(data_key, verifying_key)
        except PathNotFound:
            raise UploadUnknown(f"upload unknown: {upload_id} (already completed)") from None
        except ObjectBusy:
            raise UploadInvalid(f"upload {upload_id} still has a chunk being written") from None
        return verifying_key

    def cancel(self, repository: str, upload_id: str) -> None:
        self.status(repository, upload_id)
        self._remove(repository, upload_id)

    def _remove(self, repository: str, upload_id: str) -> None:
        self._hashes.forget(upload_id)
        delete_quietly(self.driver, paths.upload(repository, upload_id))

    def _digest_of(self, upload_id: str, data_key: str, size: int, algorithm: str) -> Digest:
        hasher = self._hashes.take(upload_id, size)
        if hasher is None or algorithm != DEFAULT_ALGORITHM:
            hasher = new_hasher(algorithm)
            with self.driver.reader(data_key) as stream:
                for chunk in iter_chunks(stream, REHASH_CHUNK):
                    hasher.update(chunk)
        return Digest.from_hasher(algorithm, hasher)

    # -- maintenance -----------------------------------------------------------------------------
    def purge(self, repositories: Iterable[str], older_than_seconds: float, now: float | None = None) -> int:
        """Remove uploads started more than `older_than_seconds` ago; returns how many."""
        cutoff = (now or time.time()) - older_than_seconds
        removed = 0
        for repository in repositories:
            try:
                upload_keys = self.driver.list(paths.uploads(repository))
            except PathNotFound:
                continue
            for key in upload_keys:
                upload_id = key.rsplit("/", 1)[1]
                try:
                    started = self.status(repository, upload_id).started_at
                except (UploadUnknown, ValueError):
                    started = 0.0  # no readable state: debris from a crash, purge it
                if started < cutoff:
                    self._hashes.forget(upload_id)
                    if delete_quietly(self.driver, key):
                        removed += 1
        return removed


class RepositoryUploads:
    """One repository's uploads (`Repository.uploads`): an upload id is known only to the
    repository that started it, so an id from another repository's upload is UploadUnknown here
    and nothing of that upload is read, changed or completed through this view."""

    def __init__(self, store: UploadStore, name: str) -> None:
        self.store = store
        self.name = name

    def start(self) -> UploadStatus:
        return self.store.start(self.name)

    def status(self, upload_id: str) -> UploadStatus:
        return self.store.status(self.name, upload_id)

    def open_session(self, upload_id: str, expected_offset: int | None = None) -> UploadSession:
        return self.store.open_session(self.name, upload_id, expected_offset)

    def append(self, upload_id: str, chunks: Iterable[bytes], expected_offset: int | None = None) -> int:
        return self.store.append(self.name, upload_id, chunks, expected_offset)

    def complete(self, upload_id: str, digest: Digest, expected_size: int | None = None) -> BlobInfo:
        return self.store.complete(self.name, upload_id, digest, expected_size)

    def cancel(self, upload_id: str) -> None:
        self.store.cancel(self.name, upload_id)

    def known(self, upload_id: str) -> None:
        """UploadUnknown unless this repository has the upload (one small read)."""
        self.store.known(self.name, upload_id)

    def discard_empty(self, upload_id: str) -> None:
        self.store.discard_empty(self.name, upload_id)
