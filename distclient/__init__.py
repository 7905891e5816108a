"""The Distribution-API client: talks to any OCI registry (transport, challenges and the token flow,
stored credentials, mirrors and fallback, retries and resumed downloads).

Imports only `ocispec` and the standard library; it knows nothing of a local store,
unpacking or a CLI. Used by `puller` and, for a pull-through cache, by `registry`. Code outside
imports it only from here (`from distclient import RegistryClient`), never a submodule.

Modules: `errors` (the exception tree), `hosts` (per-host endpoints and network settings, parsed
from TOML tables), `credentials` (docker/containers auth files, credential helpers), `transport`
(the retry loop), `http1` and `wire` (HTTP/1.1 on sockets: keep-alive pools, requests,
responses), `auth` (challenges, the token flow), `client` (RegistryClient).

Every name is imported on first use (the module that has it, then): a program that only reads the
config or the credentials does not load the HTTP stack (`client`, `transport`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import credentials
    from .auth import PULLER, Authenticator, Identity, parse_challenges
    from .client import BlobSink, FetchedManifest, RegistryClient
    from .credentials import Credentials
    from .errors import (
        AuthenticationError,
        Cancelled,
        ClientError,
        ConnectFailed,
        NetworkError,
        NotFound,
        OCIErrorEntry,
        PlainHttpAnswer,
        RangeRefused,
        RegistryDenied,
        RegistryError,
        RegistryNotFound,
        Short,
        Transient,
        Unreachable,
        UsageError,
        VerificationError,
    )
    from .hosts import (
        DEFAULT_JOBS,
        ClientConfig,
        Endpoint,
        HostConfig,
        NetworkConfig,
        check_known,
        is_loopback,
        parse_client_config,
    )
    from .transport import retry_after

#: Every name of the front door and the module that has it, loaded on first use: a program that
#: only catches the errors loads neither the hosts nor the credentials, one that only reads the
#: config not the HTTP stack (`client`, `transport`).
_LAZY = {
    **dict.fromkeys(("PULLER", "Authenticator", "Identity", "parse_challenges"), "auth"),
    **dict.fromkeys(("BlobSink", "FetchedManifest", "RegistryClient"), "client"),
    "Credentials": "credentials",
    **dict.fromkeys(("AuthenticationError", "Cancelled", "ClientError", "ConnectFailed", "NetworkError", "NotFound",
                     "OCIErrorEntry", "PlainHttpAnswer", "RangeRefused", "RegistryDenied", "RegistryError",
                     "RegistryNotFound", "Short", "Transient", "Unreachable", "UsageError", "VerificationError"),
                    "errors"),
    **dict.fromkeys(("DEFAULT_JOBS", "ClientConfig", "Endpoint", "HostConfig", "NetworkConfig", "check_known",
                     "is_loopback", "parse_client_config"), "hosts"),
    "retry_after": "transport",
}


def __getattr__(name: str) -> object:
    if name == "credentials":
        return importlib.import_module(".credentials", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_JOBS",
    "PULLER",
    "AuthenticationError",
    "Authenticator",
    "BlobSink",
    "Cancelled",
    "ClientConfig",
    "ClientError",
    "ConnectFailed",
    "Credentials",
    "Endpoint",
    "FetchedManifest",
    "HostConfig",
    "Identity",
    "NetworkConfig",
    "NetworkError",
    "NotFound",
    "OCIErrorEntry",
    "PlainHttpAnswer",
    "RangeRefused",
    "RegistryClient",
    "RegistryDenied",
    "RegistryError",
    "RegistryNotFound",
    "Short",
    "Transient",
    "Unreachable",
    "UsageError",
    "VerificationError",
    "check_known",
    "credentials",
    "is_loopback",
    "parse_challenges",
    "parse_client_config",
    "retry_after",
]
