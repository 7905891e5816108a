"""The OCI distribution-spec error codes, with the HTTP status each one usually travels with.

`ocispec` only names the codes; the registry renders them (registry/errors.py) and the puller reads
them back from error bodies.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(Enum):
    """An OCI error code: `value` is the wire name, `status` the default HTTP status."""

    BLOB_UNKNOWN = ("BLOB_UNKNOWN", 404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
    DIGEST_INVALID = ("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = ("MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry")
    MANIFEST_INVALID = ("MANIFEST_INVALID", 400, "manifest invalid")
    MANIFEST_UNKNOWN = ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry")
    NAME_INVALID = ("NAME_INVALID", 400, "invalid repository name")
    NAME_UNKNOWN = ("NAME_UNKNOWN", 404, "repository name not known to registry")
    SIZE_INVALID = ("SIZE_INVALID", 400, "provided length did not match content length")
    TAG_INVALID = ("TAG_INVALID", 400, "manifest tag did not match URI")
    UNAUTHORIZED = ("UNAUTHORIZED", 401, "authentication required")
    DENIED = ("DENIED", 403, "requested access to the resource is denied")
    UNSUPPORTED = ("UNSUPPORTED", 405, "the operation is unsupported")
    TOOMANYREQUESTS = ("TOOMANYREQUESTS", 429, "too many requests")
    RANGE_INVALID = ("RANGE_INVALID", 416, "invalid content range")
    PAGINATION_NUMBER_INVALID = ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested")
    UNAVAILABLE = ("UNAVAILABLE", 503, "service unavailable")

    def __init__(self, wire: str, status: int, message: str) -> None:
        self.wire = wire
        self.status = status
        self.message = message

    @classmethod
    def from_wire(cls, wire: str) -> ErrorCode | None:
        """The code with that wire name, or None for a code this model does not know."""
        for code in cls:
            if code.wire == wire:
                return code
        return None


class OCIValidationError(ValueError):
    """Input that breaks an OCI grammar or schema. `code` says which OCI error it amounts to."""

    def __init__(self, code: ErrorCode, message: str, detail: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
