"""What a client is told when the upstream fails and nothing cached can answer instead: the
upstream's failure as the OCI error JSON (always one of ours; the upstream's body is never passed
on), and which failures a cached answer may stand in for."""

from __future__ import annotations

from distclient import AuthenticationError, ClientError, NetworkError, NotFound, VerificationError
from ocispec.errors import ErrorCode

from ..errors import RegistryError


def can_serve_stale(exc: ClientError) -> bool:
    """Whether a cached answer is served instead of `exc`: anything but the upstream saying the
    thing does not exist (unreachable, timed out, 5xx and 429 after retries, refused credentials,
    answers that do not verify)."""
    return not isinstance(exc, NotFound)


def upstream_failure(exc: ClientError, host: str, what: str, missing: ErrorCode) -> RegistryError:
    """The answer for upstream `host`'s failure `exc` to fetch `what` when nothing is cached:
    404 with `missing` (MANIFEST_UNKNOWN, BLOB_UNKNOWN…) for its 404, 404 NAME_UNKNOWN when it
    refused access (Docker Hub answers so for names it does not have), else 503 UNAVAILABLE."""
    if isinstance(exc, NotFound):
        return RegistryError(missing, f"{what} not found upstream ({host})")
    if isinstance(exc, AuthenticationError):
        return RegistryError(ErrorCode.NAME_UNKNOWN,
                             f"upstream {host} refused access to {what}: it has no such repository, or the "
                             f"cache's credentials for it are missing or wrong")
    if isinstance(exc, VerificationError):
        return RegistryError(ErrorCode.UNAVAILABLE, f"upstream {host} sent {what} that failed verification; "
                                                    "nothing was stored, try again", headers={"Retry-After": "5"})
    reason = exc.message if isinstance(exc, NetworkError) else f"it answered: {exc.message}"
    return RegistryError(ErrorCode.UNAVAILABLE, f"upstream {host} is unavailable and {what} is not cached ({reason})",
                         headers={"Retry-After": "5"})
