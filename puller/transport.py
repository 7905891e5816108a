"""HTTP transport for the registry client: urllib3 pools (per CA file), one-shot sends that turn
connection failures into retryable errors, and the retry loop with exponential backoff that honours
`Retry-After`. Nothing here knows about registries."""

from __future__ import annotations

import email.utils
import json
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError

from .config import NetworkConfig
from .errors import NetworkError, VerificationError

MAX_RETRY_AFTER = 60.0
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
#: TLS settings of a pool: (CA file or None for the system's, verify certificates).
DEFAULT_TLS: tuple[str | None, bool] = (None, True)
T = TypeVar("T")


def origin(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of a URL: what must match for credentials to go along."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class Transient(Exception):
    """A failure worth retrying; `delay` overrides the backoff (from Retry-After)."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.message, self.delay = message, delay


class Short(Transient):
    """The body ended cleanly before the descriptor's size: retried, a verification failure at last."""


class RangeRefused(Exception):
    """416 to a Range request: the partial file is not a prefix the server can continue."""


def error_message(data: bytes, status: int) -> str:
    try:
        errors = json.loads(data).get("errors") or []
        parts = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    return f"HTTP {status}"


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

    def __init__(self, net: NetworkConfig, jobs: int = 4, sleep: Callable[[float], None] = time.sleep) -> None:
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
            reason = getattr(exc, "reason", None)
            if isinstance(exc, SSLError) or isinstance(reason, (SSLError, ssl.SSLError)):
                # A certificate that does not verify will not verify on retry either.
                raise NetworkError(f"{urlsplit(url).netloc}: TLS failure: {reason or exc}") from None
            raise Transient(f"{urlsplit(url).netloc}: {type(exc).__name__}: {exc}") from None

    def _backoff(self, attempt: int, delay: float | None) -> None:
        if delay is None:
            delay = min(self.net.backoff * (2 ** attempt), 30.0) * random.uniform(0.75, 1.25)
        self._sleep(delay)

    def retrying(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.net.retries + 1):
            try:
                return fn()
            except Transient as exc:
                if attempt >= self.net.retries:
                    if isinstance(exc, Short):
                        raise VerificationError(f"{what}: {exc.message}") from None
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
