"""The S3 driver's resumable appending writer.

S3 has no append, and a multipart upload's parts must each be at least 5 MiB except the last,
which is only known at completion. So one writer session may end (`close()`) with any number of
bytes that cannot be a part yet, and the next session may run in another process.

How it works (stateless across replicas):
- Bytes accumulate in one buffer; each time it holds `part_size` bytes it is sent as a part of a
  multipart upload on the key itself (created lazily, so objects smaller than one part never use
  multipart at all). Memory is therefore about one part, whatever the callers' write sizes.
- `close()` saves the state (`S3WriterState`): the upload id, the list of parts and what is left
  in the buffer (the "tail"). A session that began with nothing keeps its whole buffer (under one part) as the tail,
  so a blob that came in one PATCH becomes one PUT at its end, with no multipart upload; a session
  continuing an upload sends a buffer of at least the 5 MiB minimum as a part first, so a tail
  read back by the next session is under 5 MiB. Parts sent after the last saved state are simply
  not listed at completion (S3 discards unlisted parts), and their part numbers are reused by the
  next session.
- The state is kept in the key's sidecar (see sidecar), or, when the caller keeps it
  (`saved`: storage.uploads keeps it in the upload's own state object), handed to the caller by
  `saved_state()`: then this writer makes no request of its own for it.
- `writer(key, append=True)` reads the sidecar (or takes `saved`): the upload id and parts
  continue, the tail becomes the buffer. Nothing depends on the process that wrote it.
- Memory: one buffer of up to a part, never copied: a tail read back is read into a buffer of its
  own (storage.driver.framing) that the writer takes over, and the buffer `close()` leaves is
  what `saved_state()` hands over (the caller writes it out, its header prefixed in place). A
  request holds about one part (plus the transient pieces a read or a PUT passes through).
- `commit()` sends the buffer as the last part (or, without a multipart upload, PUTs the buffer as
  the whole object) and completes the upload, which makes the key appear atomically; then deletes
  the sidecar. An upload a saved state names that is gone, with an object of the saved size at the
  key, was completed by an earlier session that died before its state was dropped: that object is
  the result. `cancel()` aborts the upload and deletes the sidecar and the key. A caller keeping
  the state removes the key itself, with that state (after `cancel`, and after a `commit_to` that
  completed parts at the key and copied them on).
"""

from __future__ import annotations

from ...errors import PathNotFound, StorageError
from ..base import WriterState
from .bucket import S3Bucket
from .multipart import MAX_PARTS, Part, abort_upload, complete_upload, copy_into_upload, copy_object, create_upload
from .options import MIN_PART_SIZE, S3Options
from .sidecar import S3WriterState, delete_state, discard_state, read_sidecar, save_sidecar


class S3FileWriter:
    """See the module docstring. One writer is used by one thread at a time."""

    def __init__(self, bucket: S3Bucket, options: S3Options, key: str, append: bool,
                 saved: WriterState | None = None) -> None:
        if saved is not None and not append:
            raise ValueError("a saved writer state is continued: append=True")
        self._bucket = bucket
        self._key = key
        self._full = bucket.full_key(key)
        self._part_size = options.part_size
        self._copy_range = options.multipart_copy_part_size
        self._copy_threshold = options.multipart_copy_threshold
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._buf = bytearray()
        self._size = 0
        self._done = False  # closed, committed or cancelled
        self._state_saved = False  # a sidecar for this key may exist
        self._object_at_key = False  # continuing a committed object held in the buffer
        #: The caller keeps the state (`saved`): no sidecar is read, written or deleted.
        self._external = saved is not None
        self._saved: WriterState | None = None  # what `saved_state()` hands the caller after close()
        if saved is not None:
            # Nothing to leave a trace of: the caller's state exists already.
            self._dirty = False
            self._restore(S3WriterState.taken(saved, key))
        else:
            # A fresh or newly adopted writer must leave a trace on close() even with no writes, as
            # the filesystem driver's file does; a resumed one with nothing new need not rewrite its state.
            self._dirty = True
            if append:
                self._resume()
            else:
                self._state_saved = discard_state(bucket, key)
        #: Began with nothing: its buffer may stay the tail up to a part (module docstring).
        self._fresh = self._size == 0 and self._upload_id is None

    # -- setup -----------------------------------------------------------------------------------
    def _restore(self, state: S3WriterState) -> None:
        self._upload_id, self._parts = state.upload_id, state.parts
        self._buf = state.tail  # taken over, not copied (WriterState)
        self._size = state.size

    def _resume(self) -> None:
        state = read_sidecar(self._bucket, self._key)
        if state is not None:
            self._restore(state)
            self._state_saved = True
            self._dirty = False
            return
        size = self._bucket.object_size(self._key)
        if size is None:
            return  # nothing yet: start empty, like opening a new file for append
        # Continue a committed object: small ones come back into the buffer, larger ones become
        # the first parts of a new upload by server-side copy (no bytes through this process).
        if size < MIN_PART_SIZE:
            resp = self._bucket.call("get_object", self._key, Key=self._full)
            with resp["Body"] as body:
                self._buf = bytearray(self._bucket.guard_read(self._key, body.read))
            self._object_at_key = True
        else:
            self._upload_id = create_upload(self._bucket, self._key)
            self._parts = copy_into_upload(self._bucket, self._key, self._key, self._upload_id, size,
                                           self._copy_range)
        self._size = size

    # -- FileWriter ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise ValueError("write to a closed writer")
        view = memoryview(data).cast("B")
        written = len(view)
        while view:
            room = self._part_size - len(self._buf)
            piece = view[:room]
            self._buf += piece
            if len(self._buf) >= self._part_size:
                try:
                    self._send_part(self._buf)
                except BaseException:
                    # The piece was not stored: take it back out, so that a close() after S3
                    # returns saves exactly the bytes `size` counts (the rest of the part is
                    # sent again later).
                    del self._buf[len(self._buf) - len(piece):]
                    raise
                self._buf = bytearray()
            self._size += len(piece)
            self._dirty = True
            view = view[room:]
        return written

    def close(self) -> None:
        if self._done:
            return
        if self._dirty:
            keep_whole = self._fresh and self._upload_id is None
            if len(self._buf) >= MIN_PART_SIZE and not keep_whole:
                self._send_part(self._buf)
                self._buf = bytearray()
            state = S3WriterState(self._upload_id, self._parts, self._buf)
            if self._external:
                self._saved = state.handed()  # the buffer goes with it: `_finish` drops ours
            else:
                save_sidecar(self._bucket, self._key, state)
                self._state_saved = True
        self._finish()

    def saved_state(self) -> WriterState | None:
        saved, self._saved = self._saved, None  # handed over once: no reference to the tail stays here
        return saved

    def cancel(self) -> None:
        if self._done:
            return
        if self._upload_id:
            abort_upload(self._bucket, self._key, self._upload_id)
        if not self._external:
            # Delete the sidecar (whoever wrote it: this writer may be a fresh one over a saved
            # upload that discard_state already removed, so a missing one is fine) and the key.
            delete_state(self._bucket, self._key)
            self._bucket.call("delete_object", self._key, Key=self._full)
        # A caller keeping the state drops it, and with it the key (storage.uploads: one batch).
        self._finish()

    def commit(self) -> None:
        self._commit(adopt_completed=True)

    def _commit(self, adopt_completed: bool) -> None:
        """`adopt_completed`: an upload found completed already counts as this commit (module
        docstring); only for `commit`, whose callers verify the key's bytes afterwards."""
        if self._done:
            return
        if self._upload_id is None:
            # Everything fits in one buffer: a single atomic PUT, no multipart upload.
            self._bucket.call("put_object", self._key, Key=self._full, Body=self._buf)
        else:
            try:
                if self._buf or not self._parts:
                    self._send_part(self._buf)  # the last part may be any size
                    self._buf = bytearray()  # sent: a commit() retried after a failed completion must not resend it
                complete_upload(self._bucket, self._key, self._upload_id, self._parts)
            except StorageError as exc:
                if not adopt_completed:
                    raise
                if self._bucket.object_size(self._key) != self._size:
                    if isinstance(exc, PathNotFound) or not self._upload_exists():
                        raise PathNotFound(self._key) from exc  # its parts are gone, and no object made of them
                    raise
        if self._state_saved:
            delete_state(self._bucket, self._key)
        self._finish()

    def commit_to(self, destination: str) -> None:
        if self._done:
            raise ValueError("commit of a closed writer")
        if self._upload_id is not None:
            # The parts are on this key: complete them here, then copy server-side. Its caller
            # trusts the bytes it hashed, so an upload someone else completed is not adopted.
            self._commit(adopt_completed=False)
            copy_object(self._bucket, self._key, destination, self._size, self._copy_threshold, self._copy_range)
            if not self._external:  # a caller keeping the state removes the key with it (one batch)
                self._bucket.call("delete_object", self._key, Key=self._full)
            return
        # Everything is in the buffer (the saved tail): one PUT where it belongs, no copy.
        self._bucket.call("put_object", destination, Key=self._bucket.full_key(destination), Body=self._buf)
        if self._state_saved:
            delete_state(self._bucket, self._key)
        if self._object_at_key:
            self._bucket.call("delete_object", self._key, Key=self._full)
        self._finish()

    def held(self) -> bytes | bytearray | None:
        # Without a multipart upload the buffer is the whole object (`commit_to` PUTs just it).
        whole = self._upload_id is None and not self._done and len(self._buf) == self._size
        return self._buf if whole else None

    # -- internals -------------------------------------------------------------------------------
    def _upload_exists(self) -> bool:
        """Whether the multipart upload is still open (asked only after a call on it failed: S3
        says NoSuchUpload when it is gone, some servers answer a part of it with a 500)."""
        try:
            self._bucket.call("list_parts", self._key, Key=self._full, UploadId=self._upload_id, MaxParts=1)
        except PathNotFound:
            return False
        return True

    def _finish(self) -> None:
        self._done = True
        self._buf = bytearray()  # release the buffer now, not when the writer is collected

    def _send_part(self, data: bytearray) -> None:
        if self._upload_id is None:
            self._upload_id = create_upload(self._bucket, self._key)
        number = self._parts[-1].number + 1 if self._parts else 1
        if number > MAX_PARTS:
            raise StorageError(
                f"{self._key} exceeds {MAX_PARTS} parts of {self._part_size} bytes; raise part_size",
                key=self._key,
            )
        # A bytearray body is sent as is: botocore does not copy it.
        resp = self._bucket.call(
            "upload_part", self._key, Key=self._full, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append(Part(number, resp["ETag"], len(data)))


class S3AtomicWriter:
    """A write that appears at its key only at `commit()` (see `StorageDriver.atomic_writer`): what
    fits one part is held in memory and PUT whole; a larger body goes as a multipart upload on the
    key itself, completed only by `commit()` (aborted by `close()`/`cancel()`; one a killed process
    left behind is aborted by `remove_stale_temp`, since no sidecar names it). No sidecar, no
    second copy, no request before the first part is full."""

    def __init__(self, bucket: S3Bucket, options: S3Options, key: str) -> None:
        self._bucket = bucket
        self._key = key
        self._full = bucket.full_key(key)
        self._part_size = options.part_size
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._buf = bytearray()
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise ValueError("write to a closed writer")
        view = memoryview(data).cast("B")
        written = len(view)
        while view:
            piece = view[: self._part_size - len(self._buf)]
            self._buf += piece
            self._size += len(piece)
            view = view[len(piece):]
            if len(self._buf) >= self._part_size:
                self._send_part()
        return written

    def _send_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = create_upload(self._bucket, self._key)
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageError(f"{self._key} exceeds {MAX_PARTS} parts of {self._part_size} bytes; raise part_size",
                               key=self._key)
        resp = self._bucket.call("upload_part", self._key, Key=self._full, UploadId=self._upload_id,
                                 PartNumber=number, Body=self._buf)
        self._parts.append(Part(number, resp["ETag"], len(self._buf)))
        self._buf = bytearray()

    def close(self) -> None:
        self.cancel()  # nothing of an atomic write survives without its commit

    def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        self._buf = bytearray()
        if self._upload_id is not None:
            abort_upload(self._bucket, self._key, self._upload_id)

    def commit(self) -> None:
        if self._done:
            return
        if self._upload_id is None:
            self._bucket.call("put_object", self._key, Key=self._full, Body=self._buf)
        else:
            try:
                if self._buf:
                    self._send_part()  # the last part may be any size
                complete_upload(self._bucket, self._key, self._upload_id, self._parts)
            except BaseException:
                self.cancel()
                raise
        self._done = True
        self._buf = bytearray()
