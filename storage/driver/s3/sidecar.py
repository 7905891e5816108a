"""The S3 appending writer's state (`S3WriterState`: its multipart upload, the parts sent, the tail
not yet a part), and where it is kept when the writer keeps it itself: one hidden sidecar object
next to its key (`<dir>/.cargobay-upload-<name>`), written with a single atomic PutObject, so a
crash leaves either the previous session's state or the new one.

The sidecar is a JSON line and the tail (storage.driver.framing: the header names the multipart
upload and its parts; the tail is what was written after the last part, less than one part). Its
metadata repeats the total size and the upload id, so `stat` and `delete` need only a HEAD. In
`list`, `walk` and `stat` a sidecar stands for its key, so an upload in progress looks the same as
on the filesystem driver. A writer whose caller keeps its state (`saved`: storage.uploads) hands
the caller the same header and tail as a `WriterState` instead of saving a sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import CorruptState, PathNotFound
from ..base import FileInfo, WriterState
from ..framing import LineReader, json_line
from .bucket import S3Bucket
from .multipart import Part, abort_upload

STATE_PREFIX = ".cargobay-upload-"
META_SIZE = "cargobay-size"
META_UPLOAD_ID = "cargobay-upload-id"
_STATE_VERSION = 1


def state_key(bucket: S3Bucket, key: str) -> str:
    """The bucket key of the hidden sidecar holding `key`'s upload in progress."""
    parent, _, name = bucket.full_key(key).rpartition("/")
    return f"{parent}/{STATE_PREFIX}{name}" if parent else f"{STATE_PREFIX}{name}"


def key_of_state(name: str) -> str | None:
    """For a path component, the component of the key it holds state for, or None."""
    return name[len(STATE_PREFIX) :] if name.startswith(STATE_PREFIX) else None


@dataclass(slots=True)
class S3WriterState:
    """Where an S3 appending writer stands: what `S3FileWriter` continues from."""

    upload_id: str | None
    parts: list[Part]
    tail: bytearray  # the writer's buffer: handed on, never copied (WriterState)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts) + len(self.tail)

    def header(self) -> dict[str, Any]:
        parts = [[p.number, p.etag, p.size] for p in self.parts]
        return {"v": _STATE_VERSION, "upload_id": self.upload_id, "parts": parts}

    def handed(self) -> WriterState:
        """This state for a caller that keeps it (its tail goes with it)."""
        return WriterState(self.header(), self.tail)

    @classmethod
    def taken(cls, saved: WriterState, key: str) -> S3WriterState:
        """The state a caller kept (`WriterState()`: nothing written yet); CorruptState if it
        cannot be read."""
        if not saved.header:
            return cls(None, [], saved.tail)
        return cls.from_header(saved.header, saved.tail, key)

    @classmethod
    def from_header(cls, header: dict[str, Any], tail: bytearray, key: str) -> S3WriterState:
        try:
            if header.get("v") != _STATE_VERSION:
                raise ValueError(f"unknown format {header.get('v')!r}")
            parts = [Part(int(n), str(etag), int(size)) for n, etag, size in header["parts"]]
            upload_id = header.get("upload_id")
            if upload_id is not None and not isinstance(upload_id, str):
                raise ValueError("upload_id is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptState(f"corrupt upload state for {key}: {exc}", key=key) from None
        return cls(upload_id, parts, tail)


def save_sidecar(bucket: S3Bucket, key: str, state: S3WriterState) -> None:
    """Replace `key`'s sidecar with `state` (its tail is under one part). Only uploads begun
    before upload states held the writer's come here: their tail is joined to its line (a copy)."""
    bucket.call(
        "put_object",
        key,
        Key=state_key(bucket, key),
        Body=json_line(state.header()) + state.tail,
        Metadata={META_SIZE: str(state.size), META_UPLOAD_ID: state.upload_id or ""},
    )


def read_sidecar(bucket: S3Bucket, key: str) -> S3WriterState | None:
    """The state `key`'s sidecar holds, or None without one; CorruptState if it cannot be read.
    The body is at most one tail (under a part) plus the part list, read with one copy."""
    try:
        resp = bucket.call("get_object", key, Key=state_key(bucket, key))
    except PathNotFound:
        return None
    with resp["Body"] as body:
        framed = LineReader(body, int(resp.get("ContentLength") or 0))
        try:
            header, tail = bucket.guard_read(key, lambda: (framed.json_line(), framed.rest()))
        except ValueError as exc:
            raise CorruptState(f"corrupt upload state for {key}: {exc}", key=key) from None
    return S3WriterState.from_header(header, tail, key)


def saved_upload_id(bucket: S3Bucket, key: str) -> str | None:
    """The multipart upload id `key`'s sidecar names ("" when it names none), None without one."""
    try:
        head = bucket.call("head_object", key, Key=state_key(bucket, key))
    except PathNotFound:
        return None
    return str(head.get("Metadata", {}).get(META_UPLOAD_ID, ""))


def in_progress_info(bucket: S3Bucket, key: str) -> FileInfo | None:
    """What `stat` says about an upload in progress (bytes so far), from the sidecar's metadata."""
    try:
        head = bucket.call("head_object", key, Key=state_key(bucket, key))
    except PathNotFound:
        return None
    return FileInfo(key.strip("/"), int(head["Metadata"].get(META_SIZE, 0)), head["LastModified"].timestamp())


def discard_state(bucket: S3Bucket, key: str) -> bool:
    """Abort the upload a sidecar names and delete the sidecar. True if there was one."""
    upload_id = saved_upload_id(bucket, key)
    if upload_id is None:
        return False
    if upload_id:
        abort_upload(bucket, key, upload_id)
    delete_state(bucket, key)
    return True


def delete_state(bucket: S3Bucket, key: str) -> None:
    """Delete `key`'s sidecar (a missing one is fine)."""
    bucket.call("delete_object", key, Key=state_key(bucket, key))
