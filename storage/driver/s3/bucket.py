"""The bucket as every module of the S3 driver reaches it: one boto3 client with botocore's
retries (`retry_mode`, `max_attempts`; each retry told to `on_retry`), logical keys mapped to
object keys below the prefix, and failures translated into the storage exceptions after those
retries. The driver, its reader and writer, the multipart copy and the cleanup call S3 only
through `S3Bucket`.

Checksums are only sent or checked where S3 requires them, because servers that do not know
boto3's newest default (streaming CRC trailers) reject those requests.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import boto3
import botocore.exceptions as bce
from botocore.config import Config

from ...errors import InvalidKey, InvalidOffset, PathNotFound, StorageConfigError, StorageError, StorageUnavailable
from .options import S3Options

#: Names of the driver's own objects (upload sidecars, probes); storage.paths never builds a key
#: component like it, and `full_key` refuses one.
RESERVED = ".cargobay-"
#: Error codes that mean the credentials themselves are wrong (not a missing permission).
CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                              "AuthorizationHeaderMalformed"})
_UNAVAILABLE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException", "503"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchUpload"})
DELETE_BATCH = 1000  # DeleteObjects' limit: what one `delete_batch` takes
T = TypeVar("T")


def translate(exc: Exception, key: str, operation: str) -> Exception:
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
        if code in CREDENTIAL_CODES or code == "AccessDenied" or status == 403:
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


class S3Bucket:
    """One bucket below one key prefix. `client` is the raw boto3 client, for the few calls that
    must see botocore's own exceptions (the start-up check); everything else goes through `call`."""

    def __init__(self, options: S3Options) -> None:
        self.name = options.bucket
        self.prefix = options.prefix
        self.page_size = options.page_size
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
            self.client = _shared_session().client(
                "s3",
                endpoint_url=options.endpoint_url,
                region_name=options.region,
                aws_access_key_id=options.access_key,
                aws_secret_access_key=options.secret_key,
                aws_session_token=options.session_token,
                config=config,
            )
        self.client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)
        #: Called with the S3 operation's name whenever botocore retries one (`on_retry`).
        self.on_retry: Callable[[str], None] | None = None
        self.client.meta.events.register("request-created.s3", self._request_created)

    def _request_created(self, request: Any, operation_name: str = "", **_: Any) -> None:
        """botocore makes the request anew for every attempt and counts the attempts in its
        context: one past the first is a retry."""
        callback = self.on_retry
        if callback is None:
            return
        retries = (getattr(request, "context", None) or {}).get("retries") or {}
        if retries.get("attempt", 1) > 1:
            callback(operation_name)

    # -- keys ------------------------------------------------------------------------------------
    def full_key(self, key: str) -> str:
        """The object key in the bucket for a logical key (InvalidKey for one no driver key is)."""
        parts = key.strip("/").split("/")
        if not key or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
            raise InvalidKey(f"invalid storage key {key!r}")
        if any(p.startswith(RESERVED) for p in parts):
            raise InvalidKey(f"storage key {key!r} uses the driver's reserved {RESERVED!r} names")
        return f"{self.prefix}/{key.strip('/')}" if self.prefix else key.strip("/")

    def logical_key(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    # -- calls -----------------------------------------------------------------------------------
    def call(self, operation: str, key: str, **kwargs: Any) -> Any:
        """Call a client operation on the bucket, translating failures (see `translate`); `key`
        names what the call is about in errors."""
        try:
            return getattr(self.client, operation)(Bucket=self.name, **kwargs)
        except Exception as exc:
            raise translate(exc, key, operation) from exc

    def guard_read(self, key: str, read: Callable[[], T]) -> T:
        """Read a response body, translating a failure mid-stream like a failed call (any other
        exception passes as it is)."""
        try:
            return read()
        except Exception as exc:
            translated = translate(exc, key, "get_object")
            if translated is exc:
                raise
            raise translated from exc

    def object_size(self, key: str) -> int | None:
        """The size of the object at a logical key, None if there is none."""
        try:
            return int(self.call("head_object", key, Key=self.full_key(key))["ContentLength"])
        except PathNotFound:
            return None

    def pages(self, key: str, delimiter: str | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """ListObjectsV2 pages for everything below the prefix `key` (one page of `limit` keys)."""
        kwargs: dict[str, Any] = {"Prefix": self.full_key(key) + "/", "MaxKeys": limit or self.page_size}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            page = self.call("list_objects_v2", key, **kwargs)
            yield page
            if not page.get("IsTruncated") or limit:
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def has_objects(self, prefix: str) -> bool:
        return any(page.get("Contents") for page in self.pages(prefix, limit=1))

    def delete_batch(self, key: str, batch: list[dict[str, str]]) -> None:
        """Delete up to 1000 objects (`{"Key": full key}`) at once; `key` names them in errors."""
        if len(batch) > DELETE_BATCH:
            raise ValueError(f"DeleteObjects takes at most {DELETE_BATCH} keys")
        resp = self.call("delete_objects", key, Delete={"Objects": batch, "Quiet": True})
        errors = [e for e in resp.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
        if errors:
            first = errors[0]
            raise StorageError(f"S3 could not delete {first.get('Key')}: {first.get('Code')}", key=key)

    def presigned_url(self, operation: str, key: str, expires_in: int) -> str:
        params = {"Bucket": self.name, "Key": self.full_key(key)}
        return cast(str, self.client.generate_presigned_url(operation, Params=params, ExpiresIn=expires_in))
