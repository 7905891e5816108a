"""Streaming reads of S3 objects that survive a broken connection."""

from __future__ import annotations

import io
from typing import Any

import botocore.exceptions as bce

from .bucket import S3Bucket, translate

_READ_RESUMES = 3


class S3Reader(io.RawIOBase):
    """A GetObject body from an offset. A read that breaks mid-stream resumes where it stopped
    with a Range request pinned to the same object version (If-Match on the ETag)."""

    def __init__(self, bucket: S3Bucket, key: str, offset: int) -> None:
        super().__init__()
        self._bucket, self._key, self._pos = bucket, key, offset
        self._etag: str | None = None
        #: The whole object's size, as the first GET told it.
        self.size = 0
        self._body: Any = None
        self._body = self._open()

    def _open(self) -> Any:
        kwargs: dict[str, Any] = {"Key": self._bucket.full_key(self._key)}
        if self._pos:
            kwargs["Range"] = f"bytes={self._pos}-"
        if self._etag:
            kwargs["IfMatch"] = self._etag
        resp = self._bucket.call("get_object", self._key, **kwargs)
        self._etag = resp.get("ETag")
        whole = str(resp.get("ContentRange") or "").rpartition("/")[2]
        self.size = int(whole) if whole.isdigit() else self._pos + int(resp.get("ContentLength") or 0)
        return resp["Body"]

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed reader")
        for attempt in range(_READ_RESUMES + 1):
            try:
                data: bytes = self._body.read(None if size is None or size < 0 else size)
                self._pos += len(data)
                return data
            except (bce.BotoCoreError, OSError) as exc:
                if attempt == _READ_RESUMES:
                    raise translate(exc, self._key, "get_object") from exc
                self._body.close()
                self._body = self._open()
        raise AssertionError("unreachable")

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._body is not None:
            self._body.close()
        super().close()
