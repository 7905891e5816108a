"""The saved state of an appending writer's upload in progress: one hidden sidecar object next to
its key (`<dir>/.cargobay-upload-<name>`), written with a single atomic PutObject, so a crash
leaves either the previous session's state or the new one.

The sidecar is `<json header>\\n<tail bytes>` (the header names the multipart upload and its
parts; the tail is what was written after the last part, under S3's 5 MiB part minimum). Its
metadata repeats the total size and the upload id, so `stat` and `delete` need only a HEAD. In
`list`, `walk` and `stat` a sidecar stands for its key, so an upload in progress looks the same as
on the filesystem driver.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...errors import PathNotFound, StorageError
from ..base import FileInfo
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
class UploadState:
    upload_id: str | None
    parts: list[Part]
    tail: bytes | bytearray  # bytearray: a writer's buffer, saved without a copy

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


def save_state(bucket: S3Bucket, key: str, state: UploadState, size: int) -> None:
    """Replace `key`'s sidecar with `state` (its tail is < 5 MiB) for an upload of `size` bytes."""
    bucket.call(
        "put_object",
        key,
        Key=state_key(bucket, key),
        Body=state.encode_header() + state.tail,
        Metadata={META_SIZE: str(size), META_UPLOAD_ID: state.upload_id or ""},
    )


def read_state(bucket: S3Bucket, key: str) -> UploadState | None:
    """The saved state of an in-progress `key`, or None. The body is at most one tail (< 5 MiB)
    plus the part list."""
    try:
        resp = bucket.call("get_object", key, Key=state_key(bucket, key))
    except PathNotFound:
        return None
    with resp["Body"] as body:
        return UploadState.decode(bucket.guard_read(key, body.read), key)


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
