"""The S3 driver: the storage protocol over one bucket (see the package docstring)."""

from __future__ import annotations

import builtins
import io
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, cast

import botocore.exceptions as bce

from ...errors import InvalidOffset, PathNotFound, StorageConfigError
from ..base import DriverCapabilities, FileInfo, PendingUpload, WriterState
from .bucket import CREDENTIAL_CODES, DELETE_BATCH, S3Bucket
from .hygiene import pending_uploads, probe_key, remove_stale_temp
from .multipart import abort_uploads_below, copy_object
from .options import S3Options
from .reader import S3Reader
from .sidecar import discard_state, in_progress_info, key_of_state
from .writer import S3AtomicWriter, S3FileWriter

_LIST_CONCURRENCY = 8


class S3Driver:
    name = "s3"

    def __init__(self, options: S3Options | str | None = None, /, **fields: Any) -> None:
        """`S3Driver(S3Options(...))`, or the same fields as arguments: `S3Driver("bucket",
        region=...)`, `S3Driver(bucket=..., ...)` (S3Options has the names, defaults and checks)."""
        if isinstance(options, S3Options):
            if fields:
                raise TypeError("S3Driver takes S3Options or its fields, not both")
        else:
            options = S3Options(**fields) if options is None else S3Options(options, **fields)
        self.options = options
        self.bucket = S3Bucket(options)
        # Every call is a network round trip; objects are not files; writers append to a
        # multipart upload, not to the object a move copies, and can hand their state to the
        # caller instead of a sidecar. URLs only when redirects are on.
        self.capabilities = DriverCapabilities(presigned_urls=options.redirect, external_writer_state=True)
        self._verify_prefixes = options.verify_prefixes  # None: learnt from the first listing

    # -- protocol --------------------------------------------------------------------------------
    def get(self, key: str, limit: int | None = None) -> bytes:
        kwargs: dict[str, Any] = {"Key": self.bucket.full_key(key)}
        if limit is not None:
            if limit <= 0:
                raise ValueError(f"a read of {limit} bytes")
            kwargs["Range"] = f"bytes=0-{limit - 1}"  # the rest is never sent: the connection is reused
        try:
            resp = self.bucket.call("get_object", key, **kwargs)
        except InvalidOffset:
            return b""  # a range of an empty object (S3 answers 416)
        with resp["Body"] as body:
            data: bytes = self.bucket.guard_read(key, body.read)
        return data

    def put(self, key: str, data: bytes | bytearray) -> None:
        self.bucket.call("put_object", key, Key=self.bucket.full_key(key), Body=data)

    def put_many(self, items: Sequence[tuple[str, bytes | bytearray]]) -> None:
        for key, data in items:  # each PUT is durable when answered
            self.put(key, data)

    def reader(self, key: str, offset: int = 0) -> BinaryIO:
        if offset < 0:
            raise InvalidOffset(f"negative offset {offset} for {key}", key=key)
        try:
            return cast(BinaryIO, S3Reader(self.bucket, key, offset))
        except InvalidOffset:
            # S3 answers 416 for a range starting at the end; the filesystem gives an empty stream.
            size = self.stat(key).size
            if offset == size:
                return io.BytesIO(b"")
            raise InvalidOffset(f"offset {offset} is past the end of {key} ({size} bytes)", key=key) from None

    def writer(self, key: str, append: bool = False, saved: WriterState | None = None) -> S3FileWriter:
        return S3FileWriter(self.bucket, self.options, key, append, saved)

    def stat(self, key: str) -> FileInfo:
        full = self.bucket.full_key(key)
        try:
            head = self.bucket.call("head_object", key, Key=full)
            return FileInfo(key.strip("/"), int(head["ContentLength"]), head["LastModified"].timestamp())
        except PathNotFound:
            pass
        info = in_progress_info(self.bucket, key)
        if info is not None:
            return info
        for page in self.bucket.pages(key, limit=1):  # not delimited: empty "directories" do not count
            if page.get("Contents"):
                return FileInfo(key.strip("/"), 0, page["Contents"][0]["LastModified"].timestamp(), True)
        raise PathNotFound(key)

    def head(self, key: str) -> FileInfo:
        head = self.bucket.call("head_object", key, Key=self.bucket.full_key(key))
        return FileInfo(key.strip("/"), int(head["ContentLength"]), head["LastModified"].timestamp())

    def opened(self, key: str) -> tuple[BinaryIO, int]:
        reader = S3Reader(self.bucket, key, 0)
        return cast(BinaryIO, reader), reader.size

    def atomic_writer(self, key: str) -> S3AtomicWriter:
        return S3AtomicWriter(self.bucket, self.options, key)

    def list(self, prefix: str) -> list[str]:
        base = prefix.strip("/")
        cut = len(self.bucket.full_key(prefix)) + 1
        names: set[str] = set()
        dirs: set[str] = set()
        for page in self.bucket.pages(prefix, delimiter="/"):
            if self._verify_prefixes is None:
                server = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server", "")
                self._verify_prefixes = "seaweedfs" in server.lower()
            for obj in page.get("Contents", ()):
                name = obj["Key"][cut:]
                names.add(key_of_state(name) or name)
            for common in page.get("CommonPrefixes", ()):
                dirs.add(common["Prefix"][cut:].rstrip("/"))
        dirs.discard("")
        if dirs and self._verify_prefixes:
            with ThreadPoolExecutor(max_workers=min(_LIST_CONCURRENCY, len(dirs))) as pool:
                alive = list(pool.map(lambda d: self.bucket.has_objects(f"{base}/{d}"), sorted(dirs)))
            dirs = {d for d, ok in zip(sorted(dirs), alive, strict=True) if ok}
        names.discard("")
        names |= dirs
        if not names:
            raise PathNotFound(prefix)
        return [f"{base}/{n}" for n in sorted(names)]

    def walk(self, prefix: str) -> Iterator[FileInfo]:
        seen_objects: set[str] = set()
        in_progress: list[str] = []
        for page in self.bucket.pages(prefix):
            for obj in page.get("Contents", ()):
                key = self.bucket.logical_key(obj["Key"])
                if key.endswith("/"):
                    continue  # a "directory marker" some S3 tools create; not an object here
                parent, _, name = key.rpartition("/")
                target = key_of_state(name)
                if target is not None:
                    in_progress.append(f"{parent}/{target}" if parent else target)
                    continue
                seen_objects.add(key)
                yield FileInfo(key, int(obj["Size"]), obj["LastModified"].timestamp())
        # Uploads in progress come last, once we know whether their key also exists as an object.
        for key in in_progress:
            if key in seen_objects:
                continue
            try:
                yield self.stat(key)
            except PathNotFound:
                continue  # finished or cancelled while walking

    def list_page(self, prefix: str, start_after: str, limit: int) -> builtins.list[str]:
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Prefix": self.bucket.full_key(prefix) + "/"}
        if start_after:
            # Any string, not necessarily a key: prefixed as `full_key` does, without its checks.
            kwargs["StartAfter"] = f"{self.bucket.prefix}/{start_after}" if self.bucket.prefix else start_after
        while len(keys) < limit:  # one request per page of up to `page_size` (1,000) keys
            kwargs["MaxKeys"] = min(limit - len(keys), self.bucket.page_size)
            page = self.bucket.call("list_objects_v2", prefix, **kwargs)
            for obj in page.get("Contents", ()):
                if not obj["Key"].endswith("/"):  # a "directory marker" some S3 tools create
                    keys.append(self.bucket.logical_key(obj["Key"]))
            if not page.get("IsTruncated"):
                break
            kwargs.pop("StartAfter", None)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        return keys

    def move(self, source: str, destination: str) -> None:
        src, dst = self.bucket.full_key(source), self.bucket.full_key(destination)
        size = self.bucket.object_size(source)
        if size is None:
            raise PathNotFound(source)
        if src == dst:
            return  # S3 refuses a copy onto itself, and there is nothing to do
        copy_object(self.bucket, source, destination, size, self.options.multipart_copy_threshold,
                    self.options.multipart_copy_part_size)
        self.bucket.call("delete_object", source, Key=src)

    def delete(self, key: str) -> None:
        full = self.bucket.full_key(key)
        found = False
        if self.bucket.object_size(key) is not None:
            self.bucket.call("delete_object", key, Key=full)
            found = True
        found = discard_state(self.bucket, key) or found
        if found:
            return
        # A prefix: abort the uploads below it first (their parts are invisible to listings), then
        # delete the objects in batches.
        found = abort_uploads_below(self.bucket, key)
        batch: list[dict[str, str]] = []
        for page in self.bucket.pages(key):
            for obj in page.get("Contents", ()):
                batch.append({"Key": obj["Key"]})
                if len(batch) == DELETE_BATCH:
                    self.bucket.delete_batch(key, batch)
                    batch = []
                found = True
        if batch:
            self.bucket.delete_batch(key, batch)
        if not found:
            raise PathNotFound(key)

    def delete_many(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start:start + DELETE_BATCH]
            self.bucket.delete_batch(chunk[0], [{"Key": self.bucket.full_key(k)} for k in chunk])

    def url_for(self, key: str, method: str = "GET", expires_in: int = 1200) -> str | None:
        operation = {"GET": "get_object", "HEAD": "head_object"}.get(method.upper())
        if not self.options.redirect or operation is None:
            return None
        return self.bucket.presigned_url(operation, key, expires_in)

    def remove_stale_temp(self, cutoff: float, spare: Callable[[str], bool] | None = None) -> int:
        return remove_stale_temp(self.bucket, cutoff, spare)  # see hygiene

    def pending_uploads(self) -> Iterator[PendingUpload]:
        return pending_uploads(self.bucket)  # see hygiene

    def on_retry(self, callback: Callable[[str], None] | None) -> None:
        self.bucket.on_retry = callback  # see bucket: botocore's retries, told by its events

    def check(self) -> None:
        """Raise StorageConfigError with one line naming the problem: endpoint unreachable, no or
        rejected credentials, missing bucket, or no permission to list or write."""
        endpoint = self.options.endpoint_url
        where = f"bucket {self.bucket.name!r}" + (f" at {endpoint}" if endpoint else "")
        probe = probe_key(self.bucket, uuid.uuid4().hex)
        client, name = self.bucket.client, self.bucket.name
        steps: list[tuple[str, Callable[[], Any]]] = [
            # ListObjectsV2 rather than HeadBucket: a HEAD has no body, so its 403 cannot say why.
            ("list", lambda: client.list_objects_v2(Bucket=name, Prefix=self.bucket.prefix, MaxKeys=1)),
            ("write to", lambda: client.put_object(Bucket=name, Key=probe, Body=b"")),
            ("delete from", lambda: client.delete_object(Bucket=name, Key=probe)),
        ]
        for action, step in steps:
            try:
                step()
            except bce.ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", "")) or "unknown error"
                if code == "NoSuchBucket":
                    raise StorageConfigError(f"S3 {where} does not exist") from None
                if code in CREDENTIAL_CODES:
                    raise StorageConfigError(f"S3 credentials were rejected for {where} ({code})") from None
                if code == "AccessDenied":
                    raise StorageConfigError(f"S3 access denied: cannot {action} {where}") from None
                raise StorageConfigError(f"S3 cannot {action} {where}: {code}") from None
            except (bce.NoCredentialsError, bce.PartialCredentialsError, bce.CredentialRetrievalError):
                raise StorageConfigError(
                    "no S3 credentials: set storage.s3.access_key/secret_key or the AWS environment") from None
            except (bce.ConnectionError, bce.HTTPClientError) as exc:
                raise StorageConfigError(f"S3 endpoint for {where} is unreachable: {type(exc).__name__}") from None
