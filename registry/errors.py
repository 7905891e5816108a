"""The only place that renders the OCI error JSON, and the one table from exceptions to codes."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ocispec.errors import ErrorCode, OCIValidationError
from storage import errors as se

log = logging.getLogger("cargobay.registry")


class RegistryError(Exception):
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


class ClientHungUp(Exception):
    """The client closed the connection before its request body ended: nobody is left to answer,
    and nothing went wrong on this side. `received` counts the body bytes that arrived."""

    def __init__(self, received: int | None = None) -> None:
        super().__init__("client hung up")
        self.received = received


# Storage exception → OCI error code. Order matters: the first matching class wins.
STORAGE_ERRORS: tuple[tuple[type[se.StorageError], ErrorCode], ...] = (
    (se.BlobUnknown, ErrorCode.BLOB_UNKNOWN),
    (se.UploadUnknown, ErrorCode.BLOB_UPLOAD_UNKNOWN),
    (se.UploadRangeInvalid, ErrorCode.RANGE_INVALID),
    (se.UploadInvalid, ErrorCode.BLOB_UPLOAD_INVALID),
    (se.DigestInvalid, ErrorCode.DIGEST_INVALID),
    (se.SizeInvalid, ErrorCode.SIZE_INVALID),
    (se.ManifestBlobUnknown, ErrorCode.MANIFEST_BLOB_UNKNOWN),
    (se.ManifestInvalid, ErrorCode.MANIFEST_INVALID),
    (se.ManifestUnknown, ErrorCode.MANIFEST_UNKNOWN),
    (se.NameUnknown, ErrorCode.NAME_UNKNOWN),
    (se.InvalidKey, ErrorCode.NAME_INVALID),
    (se.StorageUnavailable, ErrorCode.UNAVAILABLE),
)


def error_body(code: ErrorCode | str, message: str, detail: object = None) -> bytes:
    wire = code.wire if isinstance(code, ErrorCode) else code
    entry: dict[str, object] = {"code": wire, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()


def error_response(code: ErrorCode, message: str | None = None, detail: object = None, status: int | None = None,
                   headers: Mapping[str, str] | None = None, method: str = "GET") -> Response:
    body = error_body(code, message or code.message, detail)
    all_headers = {"Docker-Distribution-API-Version": "registry/2.0", **(headers or {})}
    response = Response(b"" if method == "HEAD" else body, status_code=status or code.status, headers=all_headers,
                        media_type="application/json")
    if method == "HEAD":
        response.headers["Content-Length"] = str(len(body))
    return response


def to_registry_error(exc: Exception) -> RegistryError:
    """Translate any exception into the error the client sees. Unexpected ones are logged (without
    request bodies or credentials) and become a generic 500."""
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, OCIValidationError):
        return RegistryError(exc.code, exc.message, exc.detail)
    if isinstance(exc, se.StorageError):
        for cls, code in STORAGE_ERRORS:
            if isinstance(exc, cls):
                headers = {}
                if isinstance(exc, se.UploadRangeInvalid):
                    headers["Range"] = f"0-{max(exc.current_size - 1, 0)}"
                return RegistryError(code, exc.message, exc.detail or None, headers=headers)
        log.error("storage error: %s", exc)
        return RegistryError(ErrorCode.UNAVAILABLE, "storage error", status=500)
    if isinstance(exc, HTTPException):
        if exc.status_code == 405:
            return RegistryError(ErrorCode.UNSUPPORTED, "method not allowed", status=405)
        return RegistryError(ErrorCode.UNSUPPORTED, exc.detail or "not found", status=exc.status_code)
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
    error = to_registry_error(exc)
    return error_response(error.code, error.message, error.detail, error.status, error.headers, request.method)
