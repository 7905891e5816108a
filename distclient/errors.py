"""The registry client's exceptions: one tree, one base.

```
ClientError                     exit 1   base of every failure the client (and puller) reports
├── UsageError                  exit 2   bad input: a config value, a credentials file, a reference
├── NotFound                    exit 3   no such repository, tag, manifest or blob
│   └── RegistryNotFound                 ... as a remote registry answered it (404)
├── AuthenticationError         exit 4   credentials missing, refused, or not allowed this access
│   └── RegistryDenied                   ... as a remote registry answered it (401/403)
├── VerificationError           exit 5   bytes or content that do not match what was announced
├── NetworkError                exit 6   not reached, or still failing after the retries
│   ├── Unreachable                      no connection at all to `netloc`
│   ├── PlainHttpAnswer                  an HTTPS request answered in plain HTTP
│   └── Transient                        worth retrying (`delay` from Retry-After); the retry loop
│       ├── Short                        turns the last one into a NetworkError, a VerificationError
│       └── ConnectFailed                (Short) or Unreachable (ConnectFailed): never reported as is
├── RegistryError               exit 1   a remote registry's error answer: `status`, OCI `codes`
│   └── RangeRefused                     416 to a Range request (the download starts over)
└── Cancelled                   exit 1   the caller stopped the operation (a progress callback raised it)
```

Every class carries `message` (one line for the user), `detail` (structured fields) and the
`exit_code` a CLI exits with; puller's own errors (store, unpack, free space) derive from
`ClientError` through `puller.errors.PullError`, so a CLI maps the whole tree with one `except`.
A remote registry's answer keeps its HTTP status and OCI error codes as fields
(`RegistryError.status`, `.codes`, `.errors`), whichever kind it is reported as.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class ClientError(Exception):
    """Base of every failure. `exit_code` is what a CLI exits with; `detail` holds structured fields."""

    exit_code = 1

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UsageError(ClientError):
    exit_code = 2


class NotFound(ClientError):
    """The registry has no such repository, tag, manifest or blob (or a store no such image)."""

    exit_code = 3


class AuthenticationError(ClientError):
    """Credentials missing, refused, or not allowed this access."""

    exit_code = 4


class VerificationError(ClientError):
    """Bytes whose digest or size differ from what was announced, or content that breaks a limit."""

    exit_code = 5


class NetworkError(ClientError):
    """The registry could not be reached or kept failing after retries."""

    exit_code = 6


class Unreachable(NetworkError):
    """No connection could be made to `netloc` (refused, no route, name unknown, connect timeout):
    another scheme on the same host and port would fare no better."""

    def __init__(self, message: str, *, netloc: str = "", reason: str = "", attempts: int = 1) -> None:
        super().__init__(message, netloc=netloc, reason=reason, attempts=attempts)
        self.netloc, self.reason, self.attempts = netloc, reason, attempts

    @classmethod
    def of(cls, netloc: str, reason: str, attempts: int = 1, role: str = "") -> Unreachable:
        tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        return cls(f"cannot reach {role}{netloc}: {reason}{tries}", netloc=netloc, reason=reason, attempts=attempts)


class PlainHttpAnswer(NetworkError):
    """An HTTPS request was answered in plain HTTP: the server is a plain-HTTP registry."""


class Transient(NetworkError):
    """A failure worth retrying; `delay` overrides the backoff (from Retry-After). The transport's
    retry loop catches it; after the last attempt it reports a plain NetworkError instead."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message, delay=delay)
        self.delay = delay


class Short(Transient):
    """The body ended cleanly before the descriptor's size: retried, a VerificationError at last."""


class ConnectFailed(Transient):
    """No connection to `netloc` at all; after the last retry it becomes `Unreachable`."""

    def __init__(self, netloc: str, reason: str) -> None:
        super().__init__(f"cannot reach {netloc}: {reason}")
        self.netloc, self.reason = netloc, reason
        self.detail.update(netloc=netloc, reason=reason)


@dataclass(frozen=True)
class OCIErrorEntry:
    """One entry of an OCI error body's `errors` list."""

    code: str
    message: str


def parse_error_body(data: bytes) -> tuple[OCIErrorEntry, ...]:
    """The entries of an OCI error body (`{"errors": [{"code": …, "message": …}]}`); () for anything else."""
    try:
        errors = json.loads(data).get("errors") or []
        return tuple(OCIErrorEntry(str(e.get("code")), str(e.get("message"))) for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError, TypeError):
        return ()


def describe(errors: tuple[OCIErrorEntry, ...], status: int) -> str:
    """`CODE: message; CODE: message`, or `HTTP <status>` when the body said nothing."""
    return "; ".join(f"{e.code}: {e.message}" for e in errors) if errors else f"HTTP {status}"


class RegistryError(ClientError):
    """An error answer from a remote registry: its HTTP `status` and the OCI error entries of its
    body (`errors`; `codes` are their codes, such as `MANIFEST_UNKNOWN`). Reported as NotFound or
    AuthenticationError by `RegistryNotFound` and `RegistryDenied`; any other answer is this class."""

    def __init__(self, message: str, *, status: int, errors: tuple[OCIErrorEntry, ...] = ()) -> None:
        super().__init__(message, status=status, codes=tuple(e.code for e in errors))
        self.status = status
        self.errors = errors

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(e.code for e in self.errors)


class RegistryNotFound(RegistryError, NotFound):
    exit_code = 3


class RegistryDenied(RegistryError, AuthenticationError):
    exit_code = 4


class RangeRefused(RegistryError):
    """416 to a Range request: the partial file is not a prefix the server can continue."""

    def __init__(self, message: str = "the registry refused the requested range (HTTP 416)") -> None:
        super().__init__(message, status=416)


class Cancelled(ClientError):
    """The operation stopped because the caller cancelled it: a progress callback (or a wait of the
    caller's own) raised it. The client passes it on at once: no retry, no other endpoint."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
