"""Multipart uploads for the S3 driver: the resumable appending writer, and server-side copy of
large objects in ranges (UploadPartCopy), which `move` and appending to a committed object use.

S3 has no append, and a multipart upload's parts must each be at least 5 MiB except the last,
which is only known at completion. So one writer session may end (`close()`) with any number of
bytes that cannot be a part yet, and the next session may run in another process.

How it works (stateless across replicas):
- Bytes accumulate in one buffer; each time it holds `part_size` bytes it is sent as a part of a
  multipart upload on the key itself (created lazily, so objects smaller than one part never use
  multipart at all). Memory is therefore about one part, whatever the callers' write sizes.
- `close()` sends the buffer as a part if it is at least the 5 MiB minimum; what is left (< 5 MiB,
  the "tail") is saved, together with the upload id and the list of parts, in one hidden sidecar
  object next to the key (`<dir>/.cargobay-upload-<name>`), written with a single atomic PutObject:
  a crash leaves either the previous session's state or the new one. Parts sent after the last
  saved state are simply not listed at completion (S3 discards unlisted parts), and their part
  numbers are reused by the next session.
- `writer(key, append=True)` reads the sidecar: the upload id and parts continue, the tail goes
  back into the buffer. Nothing depends on the process that wrote it.
- `commit()` sends the buffer as the last part (or, without a multipart upload, PUTs the buffer as
  the whole object) and completes the upload, which makes the key appear atomically; then deletes
  the sidecar. `cancel()` aborts the upload and deletes the sidecar and the key.

The sidecar is `<json header>\\n<tail bytes>`; its metadata repeats the total size and upload id
so that `stat`/`delete` need only a HEAD.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import PathNotFound, StorageError
from .base import FileInfo
from .s3_options import MIN_PART_SIZE

if TYPE_CHECKING:
    from .s3 import S3Driver

MAX_PARTS = 10_000

STATE_PREFIX = ".cargobay-upload-"
META_SIZE = "cargobay-size"
META_UPLOAD_ID = "cargobay-upload-id"
_STATE_VERSION = 1
_COPY_CONCURRENCY = 8


def state_full(driver: S3Driver, key: str) -> str:
    """The bucket key of the hidden sidecar holding `key`'s upload in progress."""
    parent, _, name = driver._full(key).rpartition("/")
    return f"{parent}/{STATE_PREFIX}{name}" if parent else f"{STATE_PREFIX}{name}"


def in_progress_info(driver: S3Driver, key: str) -> FileInfo | None:
    """What `stat` says about an upload in progress (bytes so far), from the sidecar's metadata."""
    try:
        head = driver._call("head_object", key, Key=state_full(driver, key))
    except PathNotFound:
        return None
    return FileInfo(key.strip("/"), int(head["Metadata"].get(META_SIZE, 0)), head["LastModified"].timestamp())


def key_of_state(name: str) -> str | None:
    """For a path component, the component of the key it holds state for, or None."""
    return name[len(STATE_PREFIX) :] if name.startswith(STATE_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Part:
    number: int
    etag: str
    size: int


@dataclass(slots=True)
class UploadState:
    upload_id: str | None
    parts: list[Part]
    tail: bytes

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts) + len(self.tail)

    def encode_header(self) -> bytes:
        parts = [[p.number, p.etag, p.size] for p in self.parts]
        header = {"v": _STATE_VERSION, "upload_id": self.upload_id, "parts": parts}
        return json.dumps(header, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, body: bytes, key: str) -> UploadState:
        head, sep, tail = body.partition(b"\n")
        try:
            header = json.loads(head)
            if not sep or header.get("v") != _STATE_VERSION:
                raise ValueError("unknown format")
            parts = [Part(int(n), str(etag), int(size)) for n, etag, size in header["parts"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"corrupt upload state for {key}: {exc}", key=key) from None
        return cls(header.get("upload_id"), parts, tail)


def create_upload(driver: S3Driver, key: str) -> str:
    return str(driver._call("create_multipart_upload", key, Key=driver._full(key))["UploadId"])


def complete_upload(driver: S3Driver, key: str, upload_id: str, parts: list[Part]) -> None:
    driver._call(
        "complete_multipart_upload",
        key,
        Key=driver._full(key),
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
    )


def abort_upload(driver: S3Driver, key: str, upload_id: str) -> None:
    try:
        driver._call("abort_multipart_upload", key, Key=driver._full(key), UploadId=upload_id)
    except PathNotFound:
        pass  # already completed or aborted


def abort_uploads_below(driver: S3Driver, prefix: str) -> bool:
    """Abort every multipart upload on a key below `prefix` (their parts are invisible to object
    listings and would otherwise be billed forever). True if there was any."""
    kwargs: dict[str, Any] = {"Prefix": driver._full(prefix) + "/"}
    found = False
    while True:
        page = driver._call("list_multipart_uploads", prefix, **kwargs)
        for upload in page.get("Uploads", ()):
            abort_upload(driver, driver._logical(upload["Key"]), upload["UploadId"])
            found = True
        if not page.get("IsTruncated"):
            return found
        kwargs.update(KeyMarker=page.get("NextKeyMarker", ""), UploadIdMarker=page.get("NextUploadIdMarker", ""))


def copy_into_upload(driver: S3Driver, source: str, key: str, upload_id: str, size: int) -> list[Part]:
    """Server-side copy of the whole object `source` (a logical key of `size` bytes) into parts
    1.. of `upload_id` on `key`, several ranges at a time. Ranges are `multipart_copy_part_size`;
    a last range under the 5 MiB minimum is merged into the one before, so every part but the
    last is valid."""
    step = driver.multipart_copy_part_size
    starts = list(range(0, size, step))
    if len(starts) > 1 and size - starts[-1] < MIN_PART_SIZE:
        starts.pop()
    ends = [*starts[1:], size]
    copy_source = {"Bucket": driver.bucket, "Key": driver._full(source)}

    def copy(number: int) -> Part:
        first, last = starts[number - 1], ends[number - 1] - 1
        resp = driver._call(
            "upload_part_copy",
            key,
            Key=driver._full(key),
            UploadId=upload_id,
            PartNumber=number,
            CopySource=copy_source,
            CopySourceRange=f"bytes={first}-{last}",
        )
        return Part(number, resp["CopyPartResult"]["ETag"], last - first + 1)

    with ThreadPoolExecutor(max_workers=min(_COPY_CONCURRENCY, len(starts))) as pool:
        return list(pool.map(copy, range(1, len(starts) + 1)))


def read_state(driver: S3Driver, key: str) -> UploadState | None:
    """The saved state of an in-progress `key`, or None. The body is at most one tail (< 5 MiB)
    plus the part list."""
    try:
        resp = driver._call("get_object", key, Key=state_full(driver, key))
    except PathNotFound:
        return None
    with resp["Body"] as body:
        return UploadState.decode(driver._guard_read(key, body.read), key)


def discard_state(driver: S3Driver, key: str) -> bool:
    """Abort the upload a sidecar names and delete the sidecar. True if there was one."""
    try:
        meta = driver._call("head_object", key, Key=state_full(driver, key))["Metadata"]
    except PathNotFound:
        return False
    upload_id = meta.get(META_UPLOAD_ID)
    if upload_id:
        abort_upload(driver, key, upload_id)
    driver._call("delete_object", key, Key=state_full(driver, key))
    return True


class S3FileWriter:
    """See the module docstring. One writer is used by one thread at a time."""

    def __init__(self, driver: S3Driver, key: str, append: bool) -> None:
        self._driver = driver
        self._key = key
        self._full = driver._full(key)
        self._part_size = driver.part_size
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._buf = bytearray()
        self._size = 0
        self._done = False  # closed, committed or cancelled
        self._state_saved = False  # a sidecar for this key may exist
        # A fresh or newly adopted writer must leave a trace on close() even with no writes, as the
        # filesystem driver's file does; a resumed one with nothing new need not rewrite its state.
        self._dirty = True
        if append:
            self._resume()
        else:
            self._state_saved = discard_state(driver, key)

    # -- setup -----------------------------------------------------------------------------------
    def _resume(self) -> None:
        state = read_state(self._driver, self._key)
        if state is not None:
            self._upload_id, self._parts = state.upload_id, state.parts
            self._buf = bytearray(state.tail)
            self._size = state.size
            self._state_saved = True
            self._dirty = False
            return
        size = self._driver._object_size(self._key)
        if size is None:
            return  # nothing yet: start empty, like opening a new file for append
        # Continue a committed object: small ones come back into the buffer, larger ones become
        # the first parts of a new upload by server-side copy (no bytes through this process).
        if size < MIN_PART_SIZE:
            self._buf = bytearray(self._driver.get(self._key))
        else:
            self._upload_id = create_upload(self._driver, self._key)
            self._parts = copy_into_upload(self._driver, self._key, self._key, self._upload_id, size)
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
            self._save_state()
        self._finish()

    def cancel(self) -> None:
        if self._done:
            return
        if self._upload_id:
            abort_upload(self._driver, self._key, self._upload_id)
        # Delete the sidecar (whoever wrote it: this writer may be a fresh one over a saved upload
        # that discard_state already removed, so a missing one is fine) and the key itself.
        self._driver._call("delete_object", self._key, Key=state_full(self._driver, self._key))
        self._driver._call("delete_object", self._key, Key=self._full)
        self._finish()

    def commit(self) -> None:
        if self._done:
            return
        if self._upload_id is None:
            # Everything fits in one buffer: a single atomic PUT, no multipart upload.
            self._driver._call("put_object", self._key, Key=self._full, Body=self._buf)
        else:
            if self._buf or not self._parts:
                self._send_part(self._buf)  # the last part may be any size
                self._buf = bytearray()  # sent: a commit() retried after a failed completion must not resend it
            complete_upload(self._driver, self._key, self._upload_id, self._parts)
        if self._state_saved:
            self._driver._call("delete_object", self._key, Key=state_full(self._driver, self._key))
        self._finish()

    # -- internals -------------------------------------------------------------------------------
    def _finish(self) -> None:
        self._done = True
        self._buf = bytearray()  # release the buffer now, not when the writer is collected

    def _send_part(self, data: bytearray) -> None:
        if self._upload_id is None:
            self._upload_id = create_upload(self._driver, self._key)
        number = self._parts[-1].number + 1 if self._parts else 1
        if number > MAX_PARTS:
            raise StorageError(
                f"{self._key} exceeds {MAX_PARTS} parts of {self._part_size} bytes; raise part_size",
                key=self._key,
            )
        # A bytearray body is sent as is: botocore does not copy it.
        resp = self._driver._call(
            "upload_part", self._key, Key=self._full, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append(Part(number, resp["ETag"], len(data)))

    def _save_state(self) -> None:
        state = UploadState(self._upload_id, self._parts, b"")
        body = state.encode_header() + self._buf  # the tail is < 5 MiB here
        self._driver._call(
            "put_object",
            self._key,
            Key=state_full(self._driver, self._key),
            Body=body,
            Metadata={META_SIZE: str(self._size), META_UPLOAD_ID: self._upload_id or ""},
        )
        self._state_saved = True
