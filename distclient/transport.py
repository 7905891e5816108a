"""HTTP transport for the registry client: connection pools (`http1`, one per CA file and
verification setting), one-shot sends that turn connection failures into retryable errors, and the
retry loop with exponential backoff that honours `Retry-After`. Nothing here knows about registries."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urljoin, urlsplit

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
from .http1 import Pool
from .wire import ConnectError, HttpError, InvalidUrl, ReadTimeout, Response, TlsError

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


def _connect_reason(exc: ConnectError) -> str:
    """Why no connection was made: 'connection refused', 'no route to host'..."""
    cause = exc.cause
    if isinstance(cause, socket.gaierror):
        return f"the name does not resolve ({cause.strerror or cause})"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, OSError) and cause.strerror and not isinstance(cause, TimeoutError):
        return cause.strerror[:1].lower() + cause.strerror[1:]
    return "connection timed out"


def _broken_reason(exc: HttpError) -> str:
    """A short description of a connection that broke after it was made."""
    if isinstance(exc, ReadTimeout):
        return "no answer in time (read timeout)"
    return str(exc)  # "connection broken (ConnectionResetError)", "(RemoteDisconnected)"...


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
    import email.utils  # only for an HTTP date (its import costs a few ms)

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
        self._pools: dict[tuple[str | None, bool], Pool] = {}
        self._lock = threading.Lock()
        self._sleep = sleep

    def pool(self, ca_file: str | None = None, verify: bool = True) -> Pool:
        with self._lock:
            pool = self._pools.get((ca_file, verify))
            if pool is None:
                pool = Pool(self.net.connect_timeout, self.net.read_timeout, max(self._jobs, 1) + 2, ca_file, verify)
                self._pools[(ca_file, verify)] = pool
            return pool

    def send(self, pool: Pool, method: str, url: str, headers: dict[str, str],
             body: bytes | BinaryIO | None = None, preload: bool = True) -> Response:
        try:
            return pool.request(method, url, headers, body, preload)
        except TlsError as exc:  # a certificate that does not verify will not verify on retry either
            netloc = urlsplit(url).netloc
            if exc.reason in PLAIN_HTTP_REASONS:
                raise PlainHttpAnswer(
                    f"{netloc} answered in plain HTTP, not HTTPS: give --plain-http, or set insecure = true "
                    f'under [hosts."{netloc}"] in the puller config (for a mirror: an http:// URL)') from None
            raise NetworkError(f"{netloc}: TLS failure: {exc}") from None
        except ConnectError as exc:
            raise ConnectFailed(urlsplit(url).netloc, _connect_reason(exc)) from None
        except InvalidUrl as exc:  # a redirect to it, say: no retry makes it better
            raise NetworkError(str(exc)) from None
        except HttpError as exc:
            raise Transient(f"{urlsplit(url).netloc}: {_broken_reason(exc)}") from None

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
