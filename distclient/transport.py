"""HTTP transport for the registry client: urllib3 pools (per CA file), one-shot sends that turn
connection failures into retryable errors, and the retry loop with exponential backoff that honours
`Retry-After`. Nothing here knows about registries."""

from __future__ import annotations

import email.utils
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError, ReadTimeoutError, SSLError
from urllib3.exceptions import HTTPError as Urllib3Error

from .errors import (
    ConnectFailed,
    NetworkError,
    PlainHttpAnswer,
    Short,
    Transient,
    Unreachable,
    VerificationError,
    describe,
    parse_error_body,
)
from .hosts import DEFAULT_JOBS, NetworkConfig, origin

MAX_RETRY_AFTER = 60.0
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
#: TLS settings of a pool: (CA file or None for the system's, verify certificates).
DEFAULT_TLS: tuple[str | None, bool] = (None, True)
T = TypeVar("T")


#: OpenSSL's reasons when what came back to a ClientHello is not TLS: in practice an HTTP answer
#: ("HTTP/1.1 400" read as a TLS record header).
PLAIN_HTTP_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                                "UNKNOWN_PROTOCOL", "HTTP_REQUEST"})


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`, its arguments that are exceptions, and its causes and contexts, in that order."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 20:
        item = todo.pop(0)
        if any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [a for a in item.args if isinstance(a, BaseException)]
        todo += [e for e in (getattr(item, "reason", None), item.__cause__, item.__context__)
                 if isinstance(e, BaseException)]
    return seen


def _tls_reason(exc: BaseException) -> str | None:
    """OpenSSL's reason code (`WRONG_VERSION_NUMBER`) for a TLS failure, when it names one."""
    for item in _causes(exc):
        if isinstance(item, ssl.SSLError) and item.reason:
            return str(item.reason)
    return None


def _connect_reason(exc: BaseException) -> str | None:
    """Why no connection was made ('connection refused', 'no route to host'), or None when `exc`
    is not a failure to connect."""
    if not isinstance(exc, (NewConnectionError, ConnectTimeoutError)):
        return None
    for item in _causes(exc):
        if isinstance(item, socket.gaierror):
            return f"the name does not resolve ({item.strerror or item})"
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, OSError) and item.strerror and not isinstance(item, TimeoutError):
            return item.strerror[:1].lower() + item.strerror[1:]
    return "connection timed out"


def _broken_reason(exc: BaseException) -> str:
    """A short description of a connection that broke after it was made."""
    if isinstance(exc, ReadTimeoutError):
        return "no answer in time (read timeout)"
    if isinstance(exc, ProtocolError):
        inner = next((e for e in _causes(exc)[1:] if not isinstance(e, Urllib3Error)), None)
        return f"connection broken ({type(inner).__name__ if inner else 'protocol error'})"
    return type(exc).__name__


def error_message(data: bytes, status: int) -> str:
    """What an error body says (`CODE: message; …`), else `HTTP <status>`."""
    return describe(parse_error_body(data), status)


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(when - time.time(), 0.0), MAX_RETRY_AFTER)


class Transport:
    """Thread-safe; one per client."""

    def __init__(self, net: NetworkConfig, jobs: int = DEFAULT_JOBS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.net = net
        self._jobs = jobs
        self._pools: dict[tuple[str | None, bool], urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self._sleep = sleep

    def pool(self, ca_file: str | None = None, verify: bool = True) -> urllib3.PoolManager:
        with self._lock:
            pool = self._pools.get((ca_file, verify))
            if pool is None:
                timeout = urllib3.Timeout(connect=self.net.connect_timeout, read=self.net.read_timeout)
                kwargs: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
                if ca_file:
                    kwargs["ca_certs"] = ca_file
                pool = urllib3.PoolManager(num_pools=32, maxsize=max(self._jobs, 1) + 2, retries=False,
                                           timeout=timeout, **kwargs)
                self._pools[(ca_file, verify)] = pool
            return pool

    def send(self, pool: urllib3.PoolManager, method: str, url: str, headers: dict[str, str],
             body: Any = None, preload: bool = True) -> urllib3.BaseHTTPResponse:
        try:
            return pool.request(method, url, headers=headers, body=body, redirect=False, retries=False,
                                preload_content=preload, decode_content=False)
        except Urllib3Error as exc:
            netloc = urlsplit(url).netloc
            reason = getattr(exc, "reason", None)
            if isinstance(exc, SSLError) or isinstance(reason, (SSLError, ssl.SSLError)):
                # A certificate that does not verify will not verify on retry either.
                if _tls_reason(exc) in PLAIN_HTTP_REASONS:
                    raise PlainHttpAnswer(
                        f"{netloc} answered in plain HTTP, not HTTPS: give --plain-http, or set insecure = true "
                        f'under [hosts."{netloc}"] in the puller config (for a mirror: an http:// URL)') from None
                raise NetworkError(f"{netloc}: TLS failure: {reason or exc}") from None
            connect = _connect_reason(exc)
            if connect is not None:
                raise ConnectFailed(netloc, connect) from None
            raise Transient(f"{netloc}: {_broken_reason(exc)}") from None

    def _backoff(self, attempt: int, delay: float | None) -> None:
        if delay is None:
            delay = min(self.net.backoff * (2 ** attempt), 30.0) * random.uniform(0.75, 1.25)  # noqa: S311 (jitter)
        self._sleep(delay)

    def retrying(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.net.retries + 1):
            try:
                return fn()
            except Transient as exc:
                if attempt >= self.net.retries:
                    if isinstance(exc, Short):
                        raise VerificationError(f"{what}: {exc.message}") from None
                    if isinstance(exc, ConnectFailed):
                        raise Unreachable.of(exc.netloc, exc.reason, attempt + 1) from None
                    raise NetworkError(f"{what}: {exc.message} (gave up after {attempt + 1} attempts)") from None
                self._backoff(attempt, exc.delay)
        raise AssertionError("unreachable")

    def token_http(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
                   tls: tuple[str | None, bool] = DEFAULT_TLS) -> Any:
        """A token request with the TLS settings `tls`; redirects are followed only to the same
        scheme, host and port (the request carries credentials), any other is returned as it is."""
        pool = self.pool(*tls)

        def once() -> Any:
            target, verb, payload = url, method, body
            for _ in range(MAX_REDIRECTS + 1):
                response = self.send(pool, verb, target, headers, payload)
                location = response.headers.get("Location")
                if response.status in REDIRECTS and location and origin(urljoin(target, location)) == origin(url):
                    target = urljoin(target, location)
                    if response.status == 303:
                        verb, payload = "GET", None
                    continue
                if response.status >= 500 or response.status == 429:
                    raise Transient(f"token server HTTP {response.status}",
                                    retry_after(response.headers.get("Retry-After")))
                return response
            raise NetworkError(f"token server {urlsplit(url).netloc}: too many redirects")
        return self.retrying(f"token request to {urlsplit(url).netloc}", once)
