"""The S3 driver (boto3): keys are objects in one bucket, below an optional key prefix.

Works with AWS S3 and S3-compatible servers (MinIO, Ceph RGW, SeaweedFS). Choices that matter:
- `put` is one PutObject and `move` a server-side copy (CopyObject, or UploadPartCopy ranges for
  objects over `multipart_copy_threshold`, required above 5 GiB) then a delete: both atomic for
  readers. Nothing streams through this process except what the caller reads or writes.
- The appending writer lives in `s3_writer` (resumable from any process; memory about one part).
  Its hidden sidecar objects (`.cargobay-upload-<name>`) stand for their key in `list`, `walk` and
  `stat`, so an upload in progress looks the same as on the filesystem driver.
- Checksums are only sent or checked where S3 requires them, because servers that do not know
  boto3's newest default (streaming CRC trailers) reject those requests.
- Throttling, 5xx and connection errors are retried by botocore (`retry_mode`, `max_attempts`); a
  streaming read that breaks resumes with a Range request. What still fails becomes
  StorageUnavailable, so the registry answers 503 and recovers by itself when S3 returns.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import io
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, cast

import boto3
import botocore.exceptions as bce
from botocore.config import Config

from ..errors import InvalidKey, InvalidOffset, PathNotFound, StorageConfigError, StorageError, StorageUnavailable
from .base import DriverCapabilities, FileInfo
from .s3_hygiene import probe_key, remove_stale_temp
from .s3_options import S3Options
from .s3_writer import (
    S3FileWriter,
    abort_upload,
    abort_uploads_below,
    complete_upload,
    copy_into_upload,
    create_upload,
    discard_state,
    in_progress_info,
    key_of_state,
)

_LIST_CONCURRENCY = 8
_DELETE_BATCH = 1000  # DeleteObjects' limit
_READ_RESUMES = 3
_RESERVED = ".cargobay-"  # sidecars and probes; storage.paths never builds such a component

_UNAVAILABLE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException", "503"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchUpload"})
_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                               "AuthorizationHeaderMalformed"})


def _translate(exc: Exception, key: str, operation: str) -> Exception:
    """Map a botocore failure onto the storage exceptions (after botocore's own retries)."""
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket":
            return StorageConfigError(f"S3 bucket does not exist ({operation} {key})", key=key)
        if code in _NOT_FOUND_CODES or status == 404:
            return PathNotFound(key)
        if code == "InvalidRange" or status == 416:
            return InvalidOffset(f"offset is past the end of {key}", key=key)
        if code in _UNAVAILABLE_CODES or status >= 500:
            return StorageUnavailable(f"S3 is unavailable ({code or status} on {operation})", key=key)
        if code in _CREDENTIAL_CODES or code == "AccessDenied" or status == 403:
            return StorageConfigError(f"S3 refused {operation} on {key}: {code or status}", key=key)
        detail = f"{code or status} {err.get('Message', '')}".rstrip()
        return StorageError(f"S3 {operation} on {key} failed: {detail}", key=key)
    if isinstance(exc, (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError)):
        return StorageUnavailable(f"S3 is unreachable ({type(exc).__name__} on {operation})", key=key)
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError, bce.CredentialRetrievalError)):
        return StorageConfigError(f"no usable S3 credentials: {exc}")
    return exc


_SESSION: boto3.session.Session | None = None
_SESSION_LOCK = threading.Lock()


def _shared_session() -> boto3.session.Session:
    """One boto3 Session per process: a new one per driver reloads botocore's service models
    (~0.2 s). Clients take their own credentials and region, or the session's standard chain.
    Sessions are not thread-safe, so callers hold _SESSION_LOCK."""
    global _SESSION
    if _SESSION is None:
        _SESSION = boto3.session.Session()
    return _SESSION


def _add_content_md5(request: Any, **_: Any) -> None:
    """DeleteObjects requires an integrity header; older S3 servers accept only Content-MD5."""
    body = request.body
    if isinstance(body, (bytes, bytearray)) and "Content-MD5" not in request.headers:
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(digest).decode()


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
        self.bucket = options.bucket
        self.prefix = options.prefix
        self.endpoint_url = options.endpoint_url
        self.part_size = options.part_size
        self.redirect = options.redirect
        self.multipart_copy_threshold = options.multipart_copy_threshold
        self.multipart_copy_part_size = options.multipart_copy_part_size
        self.page_size = options.page_size
        self.verify_prefixes = options.verify_prefixes
        # Every call is a network round trip; objects are not files; writers append to a
        # multipart upload, not to the object a move copies. URLs only when redirects are on.
        self.capabilities = DriverCapabilities(presigned_urls=options.redirect)
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": options.addressing_style},
            retries={"mode": options.retry_mode, "total_max_attempts": options.max_attempts},
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            max_pool_connections=options.max_pool_connections,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        with _SESSION_LOCK:
            self._client = _shared_session().client(
                "s3",
                endpoint_url=options.endpoint_url,
                region_name=options.region,
                aws_access_key_id=options.access_key,
                aws_secret_access_key=options.secret_key,
                aws_session_token=options.session_token,
                config=config,
            )
        self._client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)

    # -- keys and calls --------------------------------------------------------------------------
    def _full(self, key: str) -> str:
        """The object key in the bucket for a logical key."""
        parts = key.strip("/").split("/")
        if not key or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
            raise InvalidKey(f"invalid storage key {key!r}")
        if any(p.startswith(_RESERVED) for p in parts):
            raise InvalidKey(f"storage key {key!r} uses the driver's reserved {_RESERVED!r} names")
        return f"{self.prefix}/{key.strip('/')}" if self.prefix else key.strip("/")

    def _logical(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _call(self, operation: str, key: str, **kwargs: Any) -> Any:
        """Call a client operation on the bucket, translating failures (see `_translate`)."""
        try:
            return getattr(self._client, operation)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise _translate(exc, key, operation) from exc

    def _object_size(self, key: str) -> int | None:
        try:
            return int(self._call("head_object", key, Key=self._full(key))["ContentLength"])
        except PathNotFound:
            return None

    def _pages(self, key: str, delimiter: str | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """ListObjectsV2 pages for everything below the prefix `key`."""
        kwargs: dict[str, Any] = {"Prefix": self._full(key) + "/", "MaxKeys": limit or self.page_size}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            page = self._call("list_objects_v2", key, **kwargs)
            yield page
            if not page.get("IsTruncated") or limit:
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _has_objects(self, prefix: str) -> bool:
        return any(page.get("Contents") for page in self._pages(prefix, limit=1))

    # -- protocol --------------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        resp = self._call("get_object", key, Key=self._full(key))
        with resp["Body"] as body:
            return self._guard_read(key, body.read)

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Key=self._full(key), Body=data)

    def reader(self, key: str, offset: int = 0) -> BinaryIO:
        if offset < 0:
            raise InvalidOffset(f"negative offset {offset} for {key}", key=key)
        try:
            return cast(BinaryIO, _S3Reader(self, key, offset))
        except InvalidOffset:
            # S3 answers 416 for a range starting at the end; the filesystem gives an empty stream.
            size = self.stat(key).size
            if offset == size:
                return io.BytesIO(b"")
            raise InvalidOffset(f"offset {offset} is past the end of {key} ({size} bytes)", key=key) from None

    def writer(self, key: str, append: bool = False) -> S3FileWriter:
        return S3FileWriter(self, key, append)

    def stat(self, key: str) -> FileInfo:
        full = self._full(key)
        try:
            head = self._call("head_object", key, Key=full)
            return FileInfo(key.strip("/"), int(head["ContentLength"]), head["LastModified"].timestamp())
        except PathNotFound:
            pass
        info = in_progress_info(self, key)
        if info is not None:
            return info
        for page in self._pages(key, limit=1):  # not delimited: empty "directories" do not count
            if page.get("Contents"):
                return FileInfo(key.strip("/"), 0, page["Contents"][0]["LastModified"].timestamp(), True)
        raise PathNotFound(key)

    def list(self, prefix: str) -> list[str]:
        base = prefix.strip("/")
        cut = len(self._full(prefix)) + 1
        names: set[str] = set()
        dirs: set[str] = set()
        for page in self._pages(prefix, delimiter="/"):
            if self.verify_prefixes is None:
                server = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server", "")
                self.verify_prefixes = "seaweedfs" in server.lower()
            for obj in page.get("Contents", ()):
                name = obj["Key"][cut:]
                names.add(key_of_state(name) or name)
            for common in page.get("CommonPrefixes", ()):
                dirs.add(common["Prefix"][cut:].rstrip("/"))
        dirs.discard("")
        if dirs and self.verify_prefixes:
            with ThreadPoolExecutor(max_workers=min(_LIST_CONCURRENCY, len(dirs))) as pool:
                alive = list(pool.map(lambda d: self._has_objects(f"{base}/{d}"), sorted(dirs)))
            dirs = {d for d, ok in zip(sorted(dirs), alive, strict=True) if ok}
        names.discard("")
        names |= dirs
        if not names:
            raise PathNotFound(prefix)
        return [f"{base}/{n}" for n in sorted(names)]

    def walk(self, prefix: str) -> Iterator[FileInfo]:
        seen_objects: set[str] = set()
        in_progress: list[str] = []
        for page in self._pages(prefix):
            for obj in page.get("Contents", ()):
                key = self._logical(obj["Key"])
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

    def move(self, source: str, destination: str) -> None:
        src, dst = self._full(source), self._full(destination)
        size = self._object_size(source)
        if size is None:
            raise PathNotFound(source)
        if src == dst:
            return  # S3 refuses a copy onto itself, and there is nothing to do
        if size <= self.multipart_copy_threshold:
            self._call("copy_object", destination, Key=dst, CopySource={"Bucket": self.bucket, "Key": src})
        else:  # CopyObject stops at 5 GiB; ranges copied in parallel are faster well before that
            upload_id = create_upload(self, destination)
            try:
                parts = copy_into_upload(self, source, destination, upload_id, size)
                complete_upload(self, destination, upload_id, parts)
            except BaseException:
                abort_upload(self, destination, upload_id)
                raise
        self._call("delete_object", source, Key=src)

    def delete(self, key: str) -> None:
        full = self._full(key)
        found = False
        if self._object_size(key) is not None:
            self._call("delete_object", key, Key=full)
            found = True
        found = discard_state(self, key) or found
        if found:
            return
        # A prefix: abort the uploads below it first (their parts are invisible to listings), then
        # delete the objects in batches.
        found = abort_uploads_below(self, key)
        batch: list[dict[str, str]] = []
        for page in self._pages(key):
            for obj in page.get("Contents", ()):
                batch.append({"Key": obj["Key"]})
                if len(batch) == _DELETE_BATCH:
                    self._delete_batch(key, batch)
                    batch = []
                found = True
        if batch:
            self._delete_batch(key, batch)
        if not found:
            raise PathNotFound(key)

    def url_for(self, key: str, method: str = "GET", expires_in: int = 1200) -> str | None:
        operation = {"GET": "get_object", "HEAD": "head_object"}.get(method.upper())
        if not self.redirect or operation is None:
            return None
        params = {"Bucket": self.bucket, "Key": self._full(key)}
        return cast(str, self._client.generate_presigned_url(operation, Params=params, ExpiresIn=expires_in))

    def remove_stale_temp(self, cutoff: float, spare: Callable[[str], bool] | None = None) -> int:
        return remove_stale_temp(self, cutoff, spare)  # see s3_hygiene

    def check(self) -> None:
        """Raise StorageConfigError with one line naming the problem: endpoint unreachable, no or
        rejected credentials, missing bucket, or no permission to list or write."""
        where = f"bucket {self.bucket!r}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")
        probe = probe_key(self, uuid.uuid4().hex)
        steps: list[tuple[str, Callable[[], Any]]] = [
            # ListObjectsV2 rather than HeadBucket: a HEAD has no body, so its 403 cannot say why.
            ("list", lambda: self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)),
            ("write to", lambda: self._client.put_object(Bucket=self.bucket, Key=probe, Body=b"")),
            ("delete from", lambda: self._client.delete_object(Bucket=self.bucket, Key=probe)),
        ]
        for action, step in steps:
            try:
                step()
            except bce.ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", "")) or "unknown error"
                if code == "NoSuchBucket":
                    raise StorageConfigError(f"S3 {where} does not exist") from None
                if code in _CREDENTIAL_CODES:
                    raise StorageConfigError(f"S3 credentials were rejected for {where} ({code})") from None
                if code == "AccessDenied":
                    raise StorageConfigError(f"S3 access denied: cannot {action} {where}") from None
                raise StorageConfigError(f"S3 cannot {action} {where}: {code}") from None
            except (bce.NoCredentialsError, bce.PartialCredentialsError, bce.CredentialRetrievalError):
                raise StorageConfigError(
                    "no S3 credentials: set storage.s3.access_key/secret_key or the AWS environment") from None
            except (bce.ConnectionError, bce.HTTPClientError) as exc:
                raise StorageConfigError(f"S3 endpoint for {where} is unreachable: {type(exc).__name__}") from None

    # -- helpers ---------------------------------------------------------------------------------
    def _delete_batch(self, key: str, batch: builtins.list[dict[str, str]]) -> None:  # `list` is a method here
        resp = self._call("delete_objects", key, Delete={"Objects": batch, "Quiet": True})
        errors = [e for e in resp.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
        if errors:
            first = errors[0]
            raise StorageError(f"S3 could not delete {first.get('Key')}: {first.get('Code')}", key=key)

    def _guard_read(self, key: str, read: Callable[[], bytes]) -> bytes:
        try:
            return read()
        except Exception as exc:
            raise _translate(exc, key, "get_object") from exc


class _S3Reader(io.RawIOBase):
    """A GetObject body from an offset. A read that breaks mid-stream resumes where it stopped
    with a Range request pinned to the same object version (If-Match on the ETag)."""

    def __init__(self, driver: S3Driver, key: str, offset: int) -> None:
        super().__init__()
        self._driver, self._key, self._pos = driver, key, offset
        self._etag: str | None = None
        self._body: Any = None
        self._body = self._open()

    def _open(self) -> Any:
        kwargs: dict[str, Any] = {"Key": self._driver._full(self._key)}
        if self._pos:
            kwargs["Range"] = f"bytes={self._pos}-"
        if self._etag:
            kwargs["IfMatch"] = self._etag
        resp = self._driver._call("get_object", self._key, **kwargs)
        self._etag = resp.get("ETag")
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
                    raise _translate(exc, self._key, "get_object") from exc
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
