"""The registry's exceptions, the one table from exceptions to OCI errors, and the only place that
renders the OCI error JSON.

Every exception the registry package defines derives from `RegistryBaseError`:

- `RegistryError`: an answer (OCI code, status, message, detail, headers). Handlers and the
  authorizer raise it; `to_registry_error` turns everything else into one (storage errors by the
  STORAGE_ERRORS table below, OCI validation errors by their code); `handle_exception` renders it.
  `BodyCutShort` is one (400 SIZE_INVALID).
- `ClientHungUp`: nobody is left to answer; `handle_hangup` logs one INFO line.
- `SettingsError` (registry.settings) and the auth files' `UsersError`, `RulesError` and
  `KeyFileError` (all ValueErrors too): unusable configuration. They happen at start or in a CLI
  command, which prints one line (registry.__main__); a file re-read while serving keeps its last
  good contents (registry.auth.files).
- `TokenError`, `LoginFailed` and `RateLimited` (registry.auth): control flow inside auth. The
  authorizer turns them into RegistryErrors (401, 403, 429), the token endpoint into its answers;
  they never reach the renderer.

Anything else reaching the renderer is a bug: it is logged (without request bodies or credentials)
and answered 500. Parsing helpers that raise a plain ValueError (registry.auth.scopes.from_claim,
registry.auth.keys.from_jwk) are caught in their own module.

Wire formats: every route answers errors with the OCI error JSON rendered here (`error_response`),
`/healthz` and the token endpoint's GET included. `POST /auth/token` answers OAuth2 errors instead
(RFC 6749 section 5.2, what its clients parse), rendered by registry.auth.endpoint.oauth2_error.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ocispec.errors import ErrorCode, OCIValidationError
from storage import (
    BlobUnknown,
    DigestInvalid,
    InvalidKey,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    SizeInvalid,
    StorageError,
    StorageUnavailable,
    UploadInvalid,
    UploadRangeInvalid,
    UploadUnknown,
)

from .headers import API_VERSION_HEADER, range_header, upload_headers

log = logging.getLogger("cargobay.registry")


class RegistryBaseError(Exception):
    """Base of every exception the registry package defines (see the module docstring)."""


class RegistryError(RegistryBaseError):
    """An error the registry answers with: an OCI code, a status and optional extra headers."""

    def __init__(self, code: ErrorCode, message: str | None = None, detail: object = None, status: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.status = status or code.status
        self.headers = dict(headers or {})


class BodyCutShort(RegistryError):
    """The request body is not what its headers announced (it ended early, or ran past its
    Content-Length): 400 SIZE_INVALID. Readers keep the bytes that did arrive."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.SIZE_INVALID, message)


class ClientHungUp(RegistryBaseError):
    """The client closed the connection before its request body ended: nobody is left to answer,
    and nothing went wrong on this side. `received` counts the body bytes that arrived."""

    def __init__(self, received: int | None = None) -> None:
        super().__init__("client hung up")
        self.received = received


#: Extra headers of an answer, from the storage exception and the request's path parameters.
HeadersFor = Callable[[StorageError, Mapping[str, str]], dict[str, str]]


@dataclass(frozen=True)
class StorageAnswer:
    """How the registry answers one storage exception class: everything the client sees besides the
    exception's own message and detail, so no handler re-maps a storage error."""

    error: type[StorageError]
    code: ErrorCode
    status: int | None = None          # None: the code's usual status
    headers: HeadersFor | None = None


def _upload_progress(exc: StorageError, path_params: Mapping[str, str]) -> dict[str, str]:
    """A refused chunk is told where its upload stands: the Range received so far and, on the
    upload's own URL (PATCH, PUT), the Location and id every upload answer carries."""
    size = exc.current_size if isinstance(exc, UploadRangeInvalid) else 0
    name, upload_id = path_params.get("name"), path_params.get("upload_id")
    if name is None or upload_id is None:
        return {"Range": range_header(size)}
    return upload_headers(name, upload_id, size)


# Storage exception → the answer. Order matters: the first matching class wins.
STORAGE_ERRORS: tuple[StorageAnswer, ...] = (
    StorageAnswer(BlobUnknown, ErrorCode.BLOB_UNKNOWN),
    StorageAnswer(UploadUnknown, ErrorCode.BLOB_UPLOAD_UNKNOWN),
    StorageAnswer(UploadRangeInvalid, ErrorCode.RANGE_INVALID, 416, _upload_progress),
    StorageAnswer(UploadInvalid, ErrorCode.BLOB_UPLOAD_INVALID),
    StorageAnswer(DigestInvalid, ErrorCode.DIGEST_INVALID),
    StorageAnswer(SizeInvalid, ErrorCode.SIZE_INVALID),
    StorageAnswer(ManifestBlobUnknown, ErrorCode.MANIFEST_BLOB_UNKNOWN),
    StorageAnswer(ManifestInvalid, ErrorCode.MANIFEST_INVALID),
    StorageAnswer(ManifestUnknown, ErrorCode.MANIFEST_UNKNOWN),
    StorageAnswer(NameUnknown, ErrorCode.NAME_UNKNOWN),
    StorageAnswer(InvalidKey, ErrorCode.NAME_INVALID),
    StorageAnswer(StorageUnavailable, ErrorCode.UNAVAILABLE),
)


#: What a write under a full disk (or an exhausted quota) raises: the store is sound but has no room.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def error_body(code: ErrorCode | str, message: str, detail: object = None) -> bytes:
    wire = code.wire if isinstance(code, ErrorCode) else code
    entry: dict[str, object] = {"code": wire, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


def error_response(code: ErrorCode, message: str | None = None, detail: object = None, status: int | None = None,
                   headers: Mapping[str, str] | None = None, method: str = "GET") -> Response:
    body = error_body(code, message or code.message, detail)
    all_headers = {**API_VERSION_HEADER, **(headers or {})}
    response = Response(b"" if method == "HEAD" else body, status_code=status or code.status, headers=all_headers,
                        media_type="application/json")
    if method == "HEAD":
        response.headers["Content-Length"] = str(len(body))
    return response


def to_registry_error(exc: Exception, path_params: Mapping[str, str] | None = None) -> RegistryError:
    """Translate any exception into the error the client sees (`path_params`: the request's, for
    answers that point back at the resource). Unexpected ones are logged (without request bodies
    or credentials) and become a generic 500."""
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, OCIValidationError):
        return RegistryError(exc.code, exc.message, exc.detail)
    if isinstance(exc, StorageError):
        for answer in STORAGE_ERRORS:
            if isinstance(exc, answer.error):
                headers = answer.headers(exc, path_params or {}) if answer.headers else {}
                return RegistryError(answer.code, exc.message, exc.detail or None, answer.status, headers)
        log.error("storage error: %s", exc)
        return RegistryError(ErrorCode.UNAVAILABLE, "storage error", status=500)
    if isinstance(exc, HTTPException):
        if exc.status_code == 405:
            return RegistryError(ErrorCode.UNSUPPORTED, "method not allowed", status=405)
        return RegistryError(ErrorCode.UNSUPPORTED, exc.detail or "not found", status=exc.status_code)
    if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
        # Not a fault of the registry's: one line for whoever frees space, and a 507 the client
        # may retry. What the request wrote is gone again or kept as an upload can resume it.
        log.error("storage full: %s (%s)", exc.strerror, exc.filename or "the storage root")
        return RegistryError(ErrorCode.UNAVAILABLE, "the registry's storage is full", status=507)
    log.exception("unexpected error", exc_info=exc)
    return RegistryError(ErrorCode.UNAVAILABLE, "internal error", status=500)


async def handle_hangup(request: Request, exc: Exception) -> Response:
    """A hang-up is one INFO line (method, path, bytes received) and no answer anyone will read."""
    received = exc.received if isinstance(exc, ClientHungUp) else None
    amount = "an unknown number of" if received is None else str(received)
    log.info("client hung up during %s %s after %s bytes of the request body", request.method, request.url.path,
             amount)
    return Response(status_code=400)  # uvicorn drops it: the connection is gone


async def handle_exception(request: Request, exc: Exception) -> Response:
    error = to_registry_error(exc, request.path_params)
    return error_response(error.code, error.message, error.detail, error.status, error.headers, request.method)
