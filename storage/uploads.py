"""Resumable blob uploads whose state lives in storage, so any replica can continue any upload.

An upload is `_uploads/<id>/startedat` (its state, storage.upload_state) plus `_uploads/<id>/data`
(bytes so far). On disk the size of `data` is the upload's offset; on S3 the state also holds the
size and the appending writer's state (parts, and the bytes not yet a part), so each step reads
one object and a PATCH writes one.

A sha256 of the bytes so far is kept in process memory while this process has seen every byte
(the common case: one client, one replica), with the token its session wrote into the state
(storage.upload_session); it is used only for a state with that token, so never for bytes another session
(another replica, or a thread of this one) saved last. When it cannot be used, or the digest uses
another algorithm, `complete` hashes the bytes the state holds when it holds them all (S3, an upload
under a part: `FileWriter.held`), and otherwise re-hashes the data from storage.

With the running hash, `complete` verifies before finishing anything, then finishes the bytes
straight at their CAS key (`FileWriter.commit_to`: a file is fsynced and renamed there under the
lock that keeps other writers out, refused if one appended meanwhile; on S3 a tail that never
made a part is one PUT there), or, when the CAS holds the blob already, drops them unwritten.
Otherwise the data is committed in place, moved out of writers' reach where they append in place
(files), read back to verify, and moved. Either way nothing reaches the CAS unverified, and after
success the state and the data key go in one batch delete. Blobs that arrive whole take no upload at all
(storage.fill). A state that cannot be read (damaged, or a newer format) makes its upload
UploadInvalid (one warning line), and the purge dates it by its object's time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from ocispec.digest import DEFAULT_ALGORITHM, Digest, Hasher, new_hasher

from . import paths
from .blobs import BlobInfo, BlobStore, RepositoryBlobs
from .driver.base import FileWriter, StorageDriver, WriterState, iter_chunks
from .errors import (
    CorruptState,
    DigestInvalid,
    ObjectBusy,
    PathNotFound,
    SizeInvalid,
    UploadInvalid,
    UploadRangeInvalid,
    UploadUnknown,
)
from .links import delete_quietly
from .upload_session import RunningHashes, UploadSession
from .upload_state import SavedUpload, UploadHeader, load_saved_upload, load_upload_header

REHASH_CHUNK = 4 * 1024 * 1024

log = logging.getLogger("cargobay.storage")


@dataclass(frozen=True, slots=True)
class UploadStatus:
    id: str
    repository: str
    started_at: float
    size: int


Loaded = TypeVar("Loaded", UploadHeader, SavedUpload)


class UploadStore:
    def __init__(self, driver: StorageDriver, blobs: BlobStore) -> None:
        self.driver = driver
        self.blobs = blobs
        self._hashes = RunningHashes()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, repository: str) -> UploadStatus:
        upload_id = str(uuid.uuid4())
        started = time.time()
        state = SavedUpload.new(repository, started, self.driver.capabilities.external_writer_state)
        self.driver.put(paths.upload_state(repository, upload_id), state.encode())
        return UploadStatus(upload_id, repository, started, 0)

    def status(self, repository: str, upload_id: str) -> UploadStatus:
        header = self.known(repository, upload_id)
        size = header.size
        if size is None:  # the data object tells (files; an S3 upload of format 1)
            try:
                size = self.driver.stat(paths.upload_data(repository, upload_id)).size
            except PathNotFound:
                size = 0
        return UploadStatus(upload_id, repository, header.started_at, size)

    def known(self, repository: str, upload_id: str) -> UploadHeader:
        """Where the upload stands (the first line of its state), or UploadUnknown; UploadInvalid
        when its state cannot be read."""
        try:
            header = self._read(repository, upload_id, load_upload_header)
        except ValueError as exc:
            raise self._unreadable(repository, upload_id, exc) from None
        self._owned(repository, upload_id, header)
        return header

    def _saved(self, repository: str, upload_id: str) -> SavedUpload:
        """The upload's whole state (with the writer's, where it holds it), as `known`."""
        try:
            saved = self._read(repository, upload_id, load_saved_upload)
        except ValueError as exc:
            raise self._unreadable(repository, upload_id, exc) from None
        self._owned(repository, upload_id, saved.header)
        return saved

    def _read(self, repository: str, upload_id: str, load: Callable[[StorageDriver, str], Loaded]) -> Loaded:
        """`load` of the upload's state (one read): UploadUnknown when there is none; ValueError
        when it cannot be read."""
        try:
            key = paths.upload_state(repository, upload_id)
        except ValueError:
            raise UploadUnknown(f"upload unknown: {upload_id[:80]}") from None
        try:
            return load(self.driver, key)
        except PathNotFound:
            raise UploadUnknown(f"upload unknown: {upload_id}") from None

    @staticmethod
    def _owned(repository: str, upload_id: str, header: UploadHeader) -> None:
        """UploadUnknown unless the state is this repository's."""
        if header.repository not in (None, repository):
            # The state lives below the repository it names, so this is a tree copied or moved by
            # hand: the upload belongs to the repository that started it, not to this one.
            raise UploadUnknown(f"upload unknown: {upload_id}")

    @staticmethod
    def _unreadable(repository: str, upload_id: str, reason: Exception) -> UploadInvalid:
        """What an upload whose state cannot be read is (told in one warning line): it cannot be
        continued; a cancel or the purge removes it."""
        log.warning("upload %s of %s cannot be continued: its state is unreadable (%s)", upload_id, repository,
                    reason)
        return UploadInvalid(f"upload {upload_id} cannot be continued: its state is unreadable; start it again")

    @staticmethod
    def _busy(upload_id: str) -> UploadInvalid:
        """What completing an upload another session is still appending to is: try again later."""
        return UploadInvalid(f"upload {upload_id} still has a chunk being written")

    def _writer(self, repository: str, upload_id: str, saved: SavedUpload) -> FileWriter:
        try:
            writer = self.driver.writer(paths.upload_data(repository, upload_id), append=True, saved=saved.writer)
        except CorruptState as exc:  # the writer's part of the state (or its sidecar) is damaged
            raise self._unreadable(repository, upload_id, exc) from None
        if saved.writer is not None and writer.size != saved.header.size:
            writer.close()  # nothing written: it saves nothing
            raise self._unreadable(repository, upload_id, ValueError(
                f"its lines disagree: {saved.header.size} bytes, the writer's {writer.size}"))
        return writer

    def _hashable(self, header: UploadHeader) -> bool:
        """Whether a running hash can stand for this upload's bytes: not for an S3 upload of format
        1, whose writer state is in a sidecar that versions before 2 also write (no token)."""
        return header.holds_writer or not self.driver.capabilities.external_writer_state

    def open_session(self, repository: str, upload_id: str, expected_offset: int | None = None) -> UploadSession:
        """Begin appending. `expected_offset` (from a Content-Range) must equal the current size."""
        saved = self._saved(repository, upload_id)  # raises UploadUnknown, UploadInvalid
        header = saved.header
        writer = self._writer(repository, upload_id, saved)
        del saved  # its writer state (up to a part) is the writer's now: not held twice while the body arrives
        if expected_offset is not None and expected_offset != writer.size:
            writer.close()
            raise UploadRangeInvalid(
                f"chunk starts at {expected_offset} but the upload has {writer.size} bytes", writer.size)
        hasher = self._hashes.take(upload_id, writer.size, header.token) if self._hashable(header) else None
        key = paths.upload_state(repository, upload_id)

        def keep(state: WriterState, size: int, token: str) -> None:
            new = UploadHeader(repository, header.started_at, size, token)
            self.driver.put(key, SavedUpload(new, state).encode())

        return UploadSession(writer, hasher, upload_id, self._hashes, header.token, keep)

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
        data_key = paths.upload_data(repository, upload_id)
        saved = self._saved(repository, upload_id)
        header = saved.header
        writer = self._writer(repository, upload_id, saved)
        del saved
        size = writer.size
        hasher = None
        try:
            if expected_size is not None and expected_size != size:
                raise SizeInvalid(f"upload has {size} bytes, expected {expected_size}")
            if digest.algorithm == DEFAULT_ALGORITHM and self._hashable(header):
                # Only the hash of exactly the bytes this state names (its token: RunningHashes).
                hasher = self._hashes.take(upload_id, size, header.token)
            held = writer.held() if hasher is None else None
            if held is not None:
                # Another process saw the bytes, but the state holds them all (S3, under a part):
                # hashed here, from what is about to be finished, with no read back.
                hasher = new_hasher(digest.algorithm)
                hasher.update(held)
            if hasher is not None:
                # The bytes were hashed here (as they arrived, or from the state that holds them
                # all): verified before anything is finished, then finished straight into the CAS
                # (a file renamed there, once no other writer can append to it; on S3 a tail that
                # never made a part is one PUT there), or dropped unwritten when the CAS holds the
                # blob already.
                self._check(digest, Digest.from_hasher(digest.algorithm, hasher))
                cas_key = paths.blob_data(digest)
                RepositoryBlobs(self.blobs, repository).link_verified(
                    digest, size, lambda: writer.commit_to(cas_key), writer.cancel)
                return self._completed(repository, upload_id, digest, size)
        except (DigestInvalid, SizeInvalid):
            writer.close()
            self._remove(repository, upload_id)
            raise
        except ObjectBusy:  # another session appends to it (files): nothing was finished
            writer.close()
            raise self._busy(upload_id) from None
        except OSError:
            writer.close()
            self._unfinishable(repository, upload_id)
            raise
        # Finish the appended object (on S3: complete the multipart upload; on disk: fsync), so it
        # can be read back for hashing and moved; an empty upload becomes an empty object.
        try:
            writer.commit()
        except PathNotFound:
            # Its parts are gone (a completion that died after moving them on, a cancel): nothing
            # of it can be finished any more, so it goes, and the client starts over.
            self._remove(repository, upload_id)
            raise UploadUnknown(f"upload unknown: {upload_id} (its bytes are gone)") from None
        except OSError:
            self._unfinishable(repository, upload_id)
            raise
        verified_key = self._out_of_writers_reach(repository, upload_id, data_key)
        if self.driver.capabilities.appends_in_place:
            # What is adopted is the file as moved: a session of another replica may have appended
            # after this one opened it, and then the hash of `size` bytes does not stand for it.
            moved = self.driver.stat(verified_key).size
            if moved != size:
                hasher, size = None, moved
        try:
            self._check(digest, self._digest_of(verified_key, hasher, digest.algorithm))
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
        """Its bytes are in the CAS: only the upload's state is left, and on S3 what a completion
        that died may have committed at its data key (a writer racing this completion may leave
        data beside it, which the purge takes with the upload's directory)."""
        self._drop_state(repository, upload_id)
        return BlobInfo(digest, size)

    def discard_empty(self, repository: str, upload_id: str) -> None:
        """Remove an upload that holds no bytes (its blob came whole, straight into the CAS:
        storage.fill): one delete of its state."""
        self._drop_state(repository, upload_id)

    def _drop_state(self, repository: str, upload_id: str) -> None:
        """The upload's state and running hash go, with its data key in the same call (where the
        bytes went elsewhere it is gone already; on S3 it costs nothing more). A multipart upload
        only a killed session knew is left to the temp sweep, which spares an upload's keys only
        while its state exists (Storage.sweep_temp)."""
        self._hashes.forget(upload_id)
        self.driver.delete_many([paths.upload_state(repository, upload_id), paths.upload_data(repository, upload_id)])

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
            raise self._busy(upload_id) from None
        return verifying_key

    def cancel(self, repository: str, upload_id: str) -> None:
        try:
            self.known(repository, upload_id)
        except UploadInvalid:
            pass  # its state is unreadable: it cannot be continued, but it can go (it lies below this repository)
        self._remove(repository, upload_id)

    def _unfinishable(self, repository: str, upload_id: str) -> None:
        """Finishing failed with an OSError (a full disk, an fsync that reported a write error):
        the upload goes, and the client starts over. What its file holds may never have reached
        the disk, and a second fsync would not say so (the kernel reports a write error once), so
        a retried completion must not verify it from the page cache and place it."""
        try:
            self._remove(repository, upload_id)
        except OSError as exc:
            log.warning("upload %s of %s could not be removed after it failed to finish: %s", upload_id,
                        repository, exc)

    def _remove(self, repository: str, upload_id: str) -> None:
        self._hashes.forget(upload_id)
        delete_quietly(self.driver, paths.upload(repository, upload_id))

    def _digest_of(self, data_key: str, hasher: Hasher | None, algorithm: str) -> Digest:
        if hasher is None or algorithm != DEFAULT_ALGORITHM:
            hasher = new_hasher(algorithm)
            with self.driver.reader(data_key) as stream:
                for chunk in iter_chunks(stream, REHASH_CHUNK):
                    hasher.update(chunk)
        return Digest.from_hasher(algorithm, hasher)

    # -- maintenance -----------------------------------------------------------------------------
    def purge(self, repositories: Iterable[str], older_than_seconds: float, now: float | None = None) -> int:
        """Remove uploads started more than `older_than_seconds` ago; returns how many. An upload
        whose state cannot be read is as old as its state object (one HEAD, only for it); one
        without a state is debris from a crash, and goes."""
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
                    started = self._read(repository, upload_id, load_upload_header).started_at
                except UploadUnknown:
                    started = 0.0
                except ValueError:
                    started = self._written_at(repository, upload_id)
                if started < cutoff:
                    self._hashes.forget(upload_id)
                    if delete_quietly(self.driver, key):
                        removed += 1
        return removed

    def _written_at(self, repository: str, upload_id: str) -> float:
        try:
            return self.driver.head(paths.upload_state(repository, upload_id)).modified
        except PathNotFound:
            return 0.0  # gone meanwhile: what is left of it is debris


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
