"""The S3 driver's resumable appending writer.

S3 has no append, and a multipart upload's parts must each be at least 5 MiB except the last,
which is only known at completion. So one writer session may end (`close()`) with any number of
bytes that cannot be a part yet, and the next session may run in another process.

How it works (stateless across replicas):
- Bytes accumulate in one buffer; each time it holds `part_size` bytes it is sent as a part of a
  multipart upload on the key itself (created lazily, so objects smaller than one part never use
  multipart at all). Memory is therefore about one part, whatever the callers' write sizes.
- `close()` sends the buffer as a part if it is at least the 5 MiB minimum; what is left (< 5 MiB,
  the "tail") is saved, together with the upload id and the list of parts, in the key's sidecar
  (see sidecar). Parts sent after the last saved state are simply not listed at completion (S3
  discards unlisted parts), and their part numbers are reused by the next session.
- `writer(key, append=True)` reads the sidecar: the upload id and parts continue, the tail goes
  back into the buffer. Nothing depends on the process that wrote it.
- `commit()` sends the buffer as the last part (or, without a multipart upload, PUTs the buffer as
  the whole object) and completes the upload, which makes the key appear atomically; then deletes
  the sidecar. `cancel()` aborts the upload and deletes the sidecar and the key.
"""

from __future__ import annotations

from ...errors import StorageError
from .bucket import S3Bucket
from .multipart import MAX_PARTS, Part, abort_upload, complete_upload, copy_into_upload, copy_object, create_upload
from .options import MIN_PART_SIZE, S3Options
from .sidecar import UploadState, delete_state, discard_state, read_state, save_state


class S3FileWriter:
    """See the module docstring. One writer is used by one thread at a time."""

    def __init__(self, bucket: S3Bucket, options: S3Options, key: str, append: bool) -> None:
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
        # A fresh or newly adopted writer must leave a trace on close() even with no writes, as the
        # filesystem driver's file does; a resumed one with nothing new need not rewrite its state.
        self._dirty = True
        if append:
            self._resume()
        else:
            self._state_saved = discard_state(bucket, key)

    # -- setup -----------------------------------------------------------------------------------
    def _resume(self) -> None:
        state = read_state(self._bucket, self._key)
        if state is not None:
            self._upload_id, self._parts = state.upload_id, state.parts
            self._buf = bytearray(state.tail)
            self._size = state.size
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
            if len(self._buf) >= MIN_PART_SIZE:
                self._send_part(self._buf)
                self._buf = bytearray()
            save_state(self._bucket, self._key, UploadState(self._upload_id, self._parts, self._buf), self._size)
            self._state_saved = True
        self._finish()

    def cancel(self) -> None:
        if self._done:
            return
        if self._upload_id:
            abort_upload(self._bucket, self._key, self._upload_id)
        # Delete the sidecar (whoever wrote it: this writer may be a fresh one over a saved upload
        # that discard_state already removed, so a missing one is fine) and the key itself.
        delete_state(self._bucket, self._key)
        self._bucket.call("delete_object", self._key, Key=self._full)
        self._finish()

    def commit(self) -> None:
        if self._done:
            return
        if self._upload_id is None:
            # Everything fits in one buffer: a single atomic PUT, no multipart upload.
            self._bucket.call("put_object", self._key, Key=self._full, Body=self._buf)
        else:
            if self._buf or not self._parts:
                self._send_part(self._buf)  # the last part may be any size
                self._buf = bytearray()  # sent: a commit() retried after a failed completion must not resend it
            complete_upload(self._bucket, self._key, self._upload_id, self._parts)
        if self._state_saved:
            delete_state(self._bucket, self._key)
        self._finish()

    def commit_to(self, destination: str) -> None:
        if self._done:
            raise ValueError("commit of a closed writer")
        if self._upload_id is not None:
            self.commit()  # the parts are on this key: complete them here, then copy server-side
            copy_object(self._bucket, self._key, destination, self._size, self._copy_threshold, self._copy_range)
            self._bucket.call("delete_object", self._key, Key=self._full)
            return
        # Everything is in the buffer (the saved tail): one PUT where it belongs, no copy.
        self._bucket.call("put_object", destination, Key=self._bucket.full_key(destination), Body=self._buf)
        if self._state_saved:
            delete_state(self._bucket, self._key)
        if self._object_at_key:
            self._bucket.call("delete_object", self._key, Key=self._full)
        self._finish()

    # -- internals -------------------------------------------------------------------------------
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
