"""The puller's exceptions. The CLI maps each class to one readable line and an exit status."""

from __future__ import annotations


class PullError(Exception):
    """Base of every puller failure. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class UsageError(PullError):
    exit_code = 2


class NotFound(PullError):
    """The registry has no such repository, tag, manifest or blob (or the store no such image)."""

    exit_code = 3


class AuthenticationError(PullError):
    """Credentials missing, refused, or not allowed this access."""

    exit_code = 4


class VerificationError(PullError):
    """Bytes whose digest or size differ from what was announced, or content that breaks a limit."""

    exit_code = 5


class NetworkError(PullError):
    """The registry could not be reached or kept failing after retries."""

    exit_code = 6


class UnsafeContent(VerificationError):
    """A layer that would write outside the unpack root, or exceeds the unpacked-size limit."""

    exit_code = 7


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


class InsufficientSpace(PullError):
    """Writing on would leave the target filesystem with less free space than the reserve
    (`--min-free-space`), or the filesystem is full."""

    exit_code = 8
