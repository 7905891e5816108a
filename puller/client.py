"""Registry HTTP: endpoints (mirrors, then the host), authentication, redirects, retries, ranges.

One `RegistryClient` per command; it is thread-safe (urllib3 pools), so layer downloads share it.
Rules it keeps:
- every request to a mirror carries `ns=<the host the reference names>`;
- `Authorization` goes only to the endpoint it was obtained for: a redirect to another host (an S3
  presigned URL) is followed without it;
- connection failures, stalls (read timeout), 5xx and 429 (honouring `Retry-After`) are retried with
  exponential backoff; a blob download that breaks off continues with `Range` from what it has;
- a blob body longer than its descriptor is refused, so are manifests over 4 MiB.
"""

from __future__ import annotations

import email.utils
import json
import random
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError

from ocispec import mediatypes as mt
from ocispec.digest import Digest, SizeExceeded
from ocispec.manifest import MAX_MANIFEST_SIZE, Descriptor
from ocispec.reference import Reference

from .auth import Authenticator
from .config import Config, Endpoint
from .errors import AuthenticationError, NetworkError, NotFound, PullError, VerificationError

CHUNK = 1 << 20
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 60.0
_REDIRECTS = (301, 302, 303, 307, 308)
T = TypeVar("T")


class BlobSink(Protocol):
    """Where a blob download writes (the store's partial file). `write` raises SizeExceeded past
    the descriptor's size; `reset` starts over from byte 0; `commit` verifies size and digest
    (VerificationError, after resetting, when they are wrong) and makes the blob visible."""

    @property
    def offset(self) -> int: ...
    def write(self, data: bytes) -> None: ...
    def reset(self) -> None: ...
    def commit(self) -> None: ...


class _Transient(Exception):
    """A failure worth retrying; `delay` overrides the backoff (from Retry-After)."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.message, self.delay = message, delay


@dataclass(frozen=True)
class FetchedManifest:
    raw: bytes
    media_type: str
    digest: Digest
    endpoint: Endpoint


def _error_message(data: bytes, status: int) -> str:
    try:
        errors = json.loads(data).get("errors") or []
        parts = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    return f"HTTP {status}"


def _retry_after(value: str | None) -> float | None:
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


class RegistryClient:
    def __init__(self, config: Config, *, plain_http: bool = False, jobs: int = 4,
                 authenticator: Authenticator | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.plain_http = plain_http
        self.net = config.network
        self._jobs = jobs
        self._pools: dict[tuple[str | None, bool], urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self._dead: set[str] = set()
        self._sleep = sleep
        self.auth = authenticator or Authenticator(self._token_http)

    # -- transport ---------------------------------------------------------------------------
    def _pool(self, ca_file: str | None = None, verify: bool = True) -> urllib3.PoolManager:
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

    def _send(self, pool: urllib3.PoolManager, method: str, url: str, headers: dict[str, str],
              body: bytes | None = None, preload: bool = True) -> urllib3.BaseHTTPResponse:
        try:
            return pool.request(method, url, headers=headers, body=body, redirect=False, retries=False,
                                preload_content=preload, decode_content=False)
        except Urllib3Error as exc:
            reason = getattr(exc, "reason", None)
            if isinstance(exc, SSLError) or isinstance(reason, (SSLError, ssl.SSLError)):
                # A certificate that does not verify will not verify on retry either.
                raise NetworkError(f"{urlsplit(url).netloc}: TLS failure: {reason or exc}") from None
            raise _Transient(f"{urlsplit(url).netloc}: {type(exc).__name__}: {exc}") from None

    def _backoff(self, attempt: int, delay: float | None) -> None:
        if delay is None:
            delay = min(self.net.backoff * (2 ** attempt), 30.0) * random.uniform(0.75, 1.25)
        self._sleep(delay)

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.net.retries + 1):
            try:
                return fn()
            except _Transient as exc:
                if attempt >= self.net.retries:
                    if isinstance(exc, _Short):
                        raise VerificationError(f"{what}: {exc.message}") from None
                    raise NetworkError(f"{what}: {exc.message} (gave up after {attempt + 1} attempts)") from None
                self._backoff(attempt, exc.delay)
        raise AssertionError("unreachable")

    def _token_http(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> Any:
        def once() -> Any:
            response = self._send(self._pool(), method, url, headers, body)
            if response.status >= 500 or response.status == 429:
                raise _Transient(f"token server HTTP {response.status}", _retry_after(response.headers.get("Retry-After")))
            return response
        return self._retrying(f"token request to {urlsplit(url).netloc}", once)

    # -- one registry request ----------------------------------------------------------------
    def _open(self, ref: Reference, ep: Endpoint, method: str, suffix: str, headers: dict[str, str] | None = None,
              preload: bool = True) -> urllib3.BaseHTTPResponse:
        """One request, following redirects and answering one auth challenge; returns a 2xx
        response, raises _Transient for retryable failures and PullError subclasses otherwise."""
        scope = f"repository:{ref.repository}:pull"
        url = f"{ep.base}/v2/{ref.repository}{suffix}"
        if ep.ns:
            url += ("&" if "?" in url else "?") + "ns=" + quote(ep.ns, safe="")
        pool = self._pool(ep.ca_file, ep.tls_verify)
        base_headers = dict(headers or {})
        authorized = False
        for _ in range(MAX_REDIRECTS + 1):
            same_host = urlsplit(url).netloc == ep.netloc
            send_headers = dict(base_headers)
            if same_host:
                cached = self.auth.cached(ep.netloc, scope)
                if cached:
                    send_headers["Authorization"] = cached
            response = self._send(pool if same_host else self._pool(), method, url, send_headers, preload=preload)
            status = response.status
            if 200 <= status < 300:
                return response
            data = response.data if preload else response.read(65536)
            response.release_conn()
            if status in _REDIRECTS and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                if status == 303:
                    method = "GET"
                continue
            if status == 401 and same_host and not authorized:
                authorized = True
                self.auth.answer(ep.netloc, scope, response.headers.get("WWW-Authenticate", ""))
                continue
            where = f"{ep.netloc} {ref.repository}{suffix.split('?')[0]}"
            if status in (401, 403):
                raise AuthenticationError(f"{where}: access denied ({_error_message(data, status)})")
            if status == 404:
                raise NotFound(f"{where}: not found ({_error_message(data, status)})")
            if status == 429 or status >= 500:
                raise _Transient(f"{where}: HTTP {status}", _retry_after(response.headers.get("Retry-After")))
            if status == 416:
                raise _RangeRefused()
            raise PullError(f"{where}: {_error_message(data, status)}")
        raise NetworkError(f"{ep.netloc}: too many redirects")

    def _endpoints(self, ref: Reference) -> list[Endpoint]:
        endpoints = self.config.endpoints(ref.domain, self.plain_http)
        alive = [ep for ep in endpoints if ep.base not in self._dead]
        return alive or endpoints

    def _each_endpoint(self, ref: Reference, fn: Callable[[Endpoint], T], prefer: Endpoint | None = None) -> T:
        """Try `fn` on each endpoint (mirrors first) until one succeeds; raise the last error."""
        endpoints = self._endpoints(ref)
        if prefer is not None and prefer in endpoints:
            endpoints.remove(prefer)
            endpoints.insert(0, prefer)
        last: PullError | None = None
        for ep in endpoints:
            try:
                return fn(ep)
            except NetworkError as exc:
                with self._lock:
                    self._dead.add(ep.base)
                last = exc
            except (NotFound, AuthenticationError, VerificationError) as exc:
                last = exc
        assert last is not None
        raise last

    # -- the operations ----------------------------------------------------------------------
    def ping(self, host: str) -> None:
        """`GET /v2/` on `host` itself, answering its challenge (for `login`)."""
        ep = self.config.endpoints(host, self.plain_http)[-1]
        scope = ""

        def once() -> None:
            url = f"{ep.base}/v2/"
            for attempt in range(2):
                headers = {}
                if cached := self.auth.cached(ep.netloc, scope):
                    headers["Authorization"] = cached
                response = self._send(self._pool(ep.ca_file, ep.tls_verify), "GET", url, headers)
                if response.status == 401 and attempt == 0:
                    self.auth.answer(ep.netloc, scope, response.headers.get("WWW-Authenticate", ""))
                    continue
                if response.status in (401, 403):
                    raise AuthenticationError(f"{host}: credentials refused (HTTP {response.status})")
                if response.status >= 500 or response.status == 429:
                    raise _Transient(f"{host}: HTTP {response.status}")
                return
        self._retrying(host, once)

    def get_manifest(self, ref: Reference, identifier: str | None = None,
                     accept: str = mt.MANIFEST_ACCEPT) -> FetchedManifest:
        """GET a manifest by tag or digest; verifies it against a requested digest or the
        registry's `Docker-Content-Digest`."""
        identifier = identifier or ref.identifier
        expected = Digest.parse(identifier) if ":" in identifier else None

        def on(ep: Endpoint) -> FetchedManifest:
            def once() -> FetchedManifest:
                response = self._open(ref, ep, "GET", f"/manifests/{identifier}", {"Accept": accept}, preload=False)
                try:
                    length = response.headers.get("Content-Length")
                    if length and length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                        raise VerificationError(f"{ref}: manifest of {length} bytes refused (limit {MAX_MANIFEST_SIZE})")
                    raw = response.read(MAX_MANIFEST_SIZE + 1)
                    if len(raw) > MAX_MANIFEST_SIZE:
                        raise VerificationError(f"{ref}: manifest larger than {MAX_MANIFEST_SIZE} bytes refused")
                except Urllib3Error as exc:
                    raise _Transient(f"{ep.netloc}: {exc}") from None
                finally:
                    response.release_conn()
                header = response.headers.get("Docker-Content-Digest")
                want = expected or (Digest.parse(header) if header and ":" in header else None)
                digest = Digest.of(raw, want.algorithm if want else "sha256")
                if want is not None and digest != want:
                    raise VerificationError(f"{ref}: manifest digest mismatch: expected {want}, got {digest}")
                media_type = mt.base_media_type(response.headers.get("Content-Type"))
                return FetchedManifest(raw, media_type, digest, ep)
            return self._retrying(f"{ep.netloc}: manifest {ref}", once)
        return self._each_endpoint(ref, on)

    def head_manifest(self, ref: Reference) -> Digest | None:
        """The digest the reference resolves to now (HEAD), or None when the registry does not say."""
        def on(ep: Endpoint) -> Digest | None:
            def once() -> Digest | None:
                response = self._open(ref, ep, "HEAD", f"/manifests/{ref.identifier}", {"Accept": mt.MANIFEST_ACCEPT})
                header = response.headers.get("Docker-Content-Digest")
                return Digest.parse(header) if header and ":" in header else None
            return self._retrying(f"{ep.netloc}: manifest {ref}", once)
        return self._each_endpoint(ref, on)

    def fetch_blob(self, ref: Reference, desc: Descriptor, sink: BlobSink,
                   progress: Callable[[int], None] = lambda n: None, prefer: Endpoint | None = None) -> None:
        """Stream blob `desc` into `sink` (continuing from `sink.offset` with Range) and commit it.
        A blob that fails verification on a mirror is tried on the next endpoint."""
        def on(ep: Endpoint) -> None:
            self._retrying(f"{ep.netloc}: blob {desc.digest}", lambda: self._fetch_once(ref, ep, desc, sink, progress))
            sink.commit()
        self._each_endpoint(ref, on, prefer)

    def _fetch_once(self, ref: Reference, ep: Endpoint, desc: Descriptor, sink: BlobSink,
                    progress: Callable[[int], None]) -> None:
        offset = sink.offset
        if offset >= desc.size:
            if offset == desc.size:
                return
            sink.reset()
            offset = 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = self._open(ref, ep, "GET", f"/blobs/{desc.digest}", headers, preload=False)
        except _RangeRefused:
            sink.reset()
            raise _Transient("range refused; starting over", 0.0) from None
        try:
            if offset and response.status != 206:
                sink.reset()  # the server ignored Range: take it from the start
                offset = 0
            elif offset and not (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
                sink.reset()
                raise _Transient("unexpected Content-Range; starting over", 0.0)
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and offset + int(length) > desc.size:
                raise VerificationError(f"{desc.digest}: registry announced {offset + int(length)} bytes, "
                                        f"descriptor says {desc.size}; refused")
            progress(sink.offset)
            while True:
                chunk = response.read1(CHUNK)  # what has arrived: a stall loses nothing already received
                if not chunk:
                    break
                sink.write(chunk)
                progress(sink.offset)
        except SizeExceeded:
            sink.reset()
            raise VerificationError(f"{desc.digest}: more bytes than the descriptor's {desc.size}; refused") from None
        except Urllib3Error as exc:
            raise _Transient(f"{ep.netloc}: download of {desc.digest} broke off at {sink.offset} bytes "
                             f"({type(exc).__name__})") from None
        finally:
            response.release_conn()
        if sink.offset < desc.size:
            raise _Short(f"{ep.netloc}: {desc.digest} ended at {sink.offset} of {desc.size} bytes")


class _Short(_Transient):
    """The body ended cleanly before the descriptor's size: retried, a verification failure at last."""


class _RangeRefused(Exception):
    """416 to a Range request: the partial file is not a prefix the server can continue."""
