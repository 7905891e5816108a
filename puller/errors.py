"""The puller's exceptions: the registry client's tree (`distclient.errors`, re-exported here) plus
the puller's own, under `PullError`:

```
ClientError (distclient)        exit 1   every failure; the CLI maps it in one place
├── UsageError, NotFound, AuthenticationError, VerificationError, NetworkError, RegistryError,
│   Cancelled, ...                       the client's kinds (see distclient.errors); the store
│                                        raises NotFound, VerificationError and UsageError too
└── PullError                   exit 1   the puller's own failures: store, unpack, export
    ├── UnsafeContent           exit 7   a layer writing outside its root, or over the size limit
    │                                    (also a VerificationError)
    └── InsufficientSpace       exit 8   the free-space reserve would be crossed, or a full disk
```
"""

from __future__ import annotations

from distclient import (
    AuthenticationError,
    Cancelled,
    ClientError,
    NetworkError,
    NotFound,
    PlainHttpAnswer,
    RegistryError,
    Unreachable,
    UsageError,
    VerificationError,
)

__all__ = [
    "AuthenticationError",
    "Cancelled",
    "ClientError",
    "InsufficientSpace",
    "NetworkError",
    "NotFound",
    "PlainHttpAnswer",
    "PullError",
    "RegistryError",
    "Unreachable",
    "UnsafeContent",
    "UsageError",
    "VerificationError",
]


class PullError(ClientError):
    """Base of the puller's own failures (store, unpack, export); `exit_code` is what the CLI exits with."""


class UnsafeContent(PullError, VerificationError):
    """A layer that would write outside the unpack root, or exceeds the unpacked-size limit."""

    exit_code = 7


class InsufficientSpace(PullError):
    """Writing on would leave the target filesystem with less free space than the reserve
    (`--min-free-space`), or the filesystem is full."""

    exit_code = 8
