"""The Distribution-API client: endpoints (mirrors, then the host), authentication, redirects,
retries, ranges.

One `RegistryClient` per command (or per upstream); it is thread-safe (connection pools), so layer
downloads share it. Its interface: `head_manifest` (what a reference resolves to now),
`get_manifest` (verified and parsed), `fetch_blob` (streamed into a `BlobSink`, resuming from the
sink's offset), `blob_exists`, `upload_blob` and `put_manifest` (pushes, to the host itself: see
`on_host`), `ping` (for a login). Failures are `errors.ClientError` kinds; a remote's error answer
is a `RegistryError` with its status and OCI codes. Rules it keeps:
- every request to a mirror carries `ns=<the host the reference names>`;
- `Authorization` goes only to the endpoint it was obtained for (same scheme, host and port): a
  redirect to another host (an S3 presigned URL), or to plain http:// on the same host, is followed
  without it;
- connection failures, stalls (read timeout), 5xx and 429 (honouring `Retry-After`) are retried with
  exponential backoff; a blob download that breaks off continues with `Range` from what it has;
- a blob body longer than its descriptor is refused, so are manifests over 4 MiB.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol, TypeVar
from urllib.parse import quote, urljoin, urlsplit

from ocispec import mediatypes as mt
from ocispec.digest import Digest, SizeExceeded
from ocispec.errors import OCIValidationError
from ocispec.manifest import MAX_MANIFEST_SIZE, Descriptor, Manifest, parse_manifest
from ocispec.reference import Reference

from .auth import PULLER, Authenticator, Identity
from .credentials import Credentials
from .errors import (
    AuthenticationError,
    Cancelled,
    ClientError,
    NetworkError,
    NotFound,
    PlainHttpAnswer,
    RangeRefused,
    RegistryDenied,
    RegistryError,
    RegistryNotFound,
    Short,
    Transient,
    Unreachable,
    VerificationError,
    describe,
    parse_error_body,
)
from .hosts import DEFAULT_JOBS, ClientConfig, Endpoint, origin
from .transport import MAX_REDIRECTS, REDIRECTS, Transport, retry_after
from .wire import HttpError, Response

CHUNK = 1 << 20
T = TypeVar("T")


class BlobSink(Protocol):
    """Where a blob download writes (the store's partial file). `offset` is where the download
    resumes (what the sink holds); `resumed_from` what it held when opened (a partial file of an
    earlier run). `write` raises SizeExceeded past the descriptor's size; `reset` starts over from
    byte 0; `commit` verifies size and digest (VerificationError, after resetting, when they are
    wrong) and makes the blob visible."""

    @property
    def offset(self) -> int: ...
    @property
    def resumed_from(self) -> int: ...
    def write(self, data: bytes) -> None: ...
    def reset(self) -> None: ...
    def commit(self) -> None: ...


@dataclass(frozen=True)
class FetchedManifest:
    raw: bytes
    media_type: str
    digest: Digest
    endpoint: Endpoint
    manifest: Manifest


def _next_page(link: str | None, base: str) -> str:
    """The next page's URL from a `Link: <…>; rel="next"` header, absolute; "" when there is none."""
    if not link or 'rel="next"' not in link.replace(" ", ""):
        return ""
    target = link.split(";", 1)[0].strip().strip("<>")
    return urljoin(base + "/", target)


def _reported(errors: list[tuple[Endpoint, ClientError]]) -> ClientError:
    """The one failure to report when every endpoint failed: what the host itself answered (the
    plain-HTTP fallback's 404 or 401 rather than the HTTPS attempt's TLS failure), else why the
    host could not be reached (a certificate problem before "it answered plain HTTP", which the
    plain-HTTP fallback then tried), else the last mirror's failure."""
    own = [exc for ep, exc in errors if not ep.is_mirror]
    for group in ([e for e in own if not isinstance(e, NetworkError)],
                  [e for e in own if not isinstance(e, PlainHttpAnswer)], own):
        if group:
            return group[0]
    return errors[-1][1]


class RegistryClient:
    def __init__(self, config: ClientConfig, *, plain_http: bool = False, jobs: int = DEFAULT_JOBS,
                 authenticator: Authenticator | None = None, sleep: Callable[[float], None] = time.sleep,
                 credentials: dict[str, Credentials] | None = None, identity: Identity = PULLER) -> None:
        """`credentials`: exactly these (by host), never the stored ones of the user running the
        process (a server's pull-through cache); None: the stored ones (docker config, helpers)."""
        self.config = config
        self.plain_http = plain_http
        self.transport = Transport(config.network, jobs, sleep)
        self._lock = threading.Lock()
        self._dead: set[str] = set()
        if authenticator is None and credentials is not None:
            authenticator = Authenticator(self.transport.token_http, lambda host: None, credentials, identity)
        self.auth = authenticator or Authenticator(self.transport.token_http, identity=identity)

    # -- one registry request ----------------------------------------------------------------
    def request(self, ref: Reference, ep: Endpoint, method: str, suffix: str, headers: dict[str, str] | None = None,
                preload: bool = True, body: bytes | BinaryIO | None = None,
                actions: str = "pull") -> Response:
        """One request to `ep` for repository `ref.repository` (`suffix` after `/v2/<repo>`, or an
        absolute URL such as an upload Location), following redirects and answering one auth
        challenge for `actions`; returns a 2xx response, raises Transient for retryable failures
        and other ClientError kinds otherwise (a RegistryError for the registry's error answers).
        A file `body` is rewound before each send."""
        scope = f"repository:{ref.repository}:{actions}"
        url = suffix if suffix.startswith(("http://", "https://")) else f"{ep.base}/v2/{ref.repository}{suffix}"
        if ep.ns:
            url += ("&" if "?" in url else "?") + "ns=" + quote(ep.ns, safe="")
        pool = self.transport.pool(ep.ca_file, ep.tls_verify)
        base_headers = dict(headers or {})
        authorized = False
        for _ in range(MAX_REDIRECTS + 1):
            same_host = origin(url) == origin(ep.base)  # the scheme too: never downgrade to http://
            send_headers = dict(base_headers)
            if same_host:
                cached = self.auth.cached(ep, scope)
                if cached:
                    send_headers["Authorization"] = cached
            if hasattr(body, "seek"):
                body.seek(0)  # type: ignore[union-attr]
            response = self.transport.send(pool if same_host else self.transport.pool(), method, url, send_headers,
                                           body, preload)
            status = response.status
            if 200 <= status < 300:
                return response
            try:
                data = response.data if preload else response.read(65536)
            except HttpError as exc:
                raise Transient(f"{ep.netloc}: connection broken while reading an HTTP {status} answer "
                                f"({type(exc).__name__})") from None
            finally:
                response.release_conn()
            if status in REDIRECTS and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                if status == 303:
                    method = "GET"
                continue
            if status == 401 and same_host and not authorized:
                authorized = True
                self.auth.answer(ep, scope, response.headers.get("WWW-Authenticate", ""))
                continue
            where = f"{ep.netloc} {ref.repository}{urlsplit(url).path.split('/' + ref.repository, 1)[-1]}"
            entries = parse_error_body(data)
            said = describe(entries, status)
            if status in (401, 403):
                raise RegistryDenied(f"{where}: access denied ({said})", status=status, errors=entries)
            if status == 404:
                raise RegistryNotFound(f"{where}: not found ({said})", status=status, errors=entries)
            if status == 429 or status >= 500:
                raise Transient(f"{where}: HTTP {status}", retry_after(response.headers.get("Retry-After")))
            if status == 416 and "Range" in base_headers:
                raise RangeRefused()
            raise RegistryError(f"{where}: {said if said.startswith('HTTP ') else f'HTTP {status} ({said})'}",
                                status=status, errors=entries)
        raise NetworkError(f"{ep.netloc}: too many redirects")

    def _endpoints(self, ref: Reference) -> list[Endpoint]:
        endpoints = self.config.endpoints(ref.domain, self.plain_http)
        alive = [ep for ep in endpoints if ep.base not in self._dead]
        return alive or endpoints

    def _each_endpoint(self, ref: Reference, fn: Callable[[Endpoint], T], prefer: Endpoint | None = None) -> T:
        """Try `fn` on each endpoint (mirrors first) until one succeeds. When all fail, raise what
        the host itself said (its first endpoint), else the last mirror's error. Cancelled (the
        caller stopping) goes straight through."""
        endpoints = self._endpoints(ref)
        if prefer is not None and prefer in endpoints:
            endpoints.remove(prefer)
            endpoints.insert(0, prefer)
        errors: list[tuple[Endpoint, ClientError]] = []
        unreachable: set[str] = set()
        for ep in endpoints:
            if ep.netloc in unreachable:  # the same host and port over the other scheme: no better
                with self._lock:
                    self._dead.add(ep.base)
                continue
            try:
                return fn(ep)
            except Cancelled:
                raise
            except NetworkError as exc:
                with self._lock:
                    self._dead.add(ep.base)
                if isinstance(exc, Unreachable) and exc.netloc == ep.netloc:
                    unreachable.add(ep.netloc)
                errors.append((ep, exc))
            except ClientError as exc:
                # Whatever a mirror answers (400 for an `ns` it does not take, 405, garbage), the
                # next endpoint may do better; the host's own other failures are final.
                if not ep.is_mirror and not isinstance(exc, (NotFound, AuthenticationError, VerificationError)):
                    raise
                errors.append((ep, exc))
        raise _reported(errors)

    # -- the operations ----------------------------------------------------------------------
    def ping(self, host: str) -> None:
        """`GET /v2/` on `host` itself, answering its challenge (for `login`): it must end in a 200."""
        def on(ep: Endpoint) -> None:
            def once() -> None:
                for attempt in range(2):
                    headers = {}
                    if cached := self.auth.cached(ep, ""):
                        headers["Authorization"] = cached
                    response = self.transport.send(self.transport.pool(ep.ca_file, ep.tls_verify), "GET",
                                                   f"{ep.base}/v2/", headers)
                    if response.status == 401 and attempt == 0:
                        self.auth.answer(ep, "", response.headers.get("WWW-Authenticate", ""))
                        continue
                    if response.status in (401, 403):
                        raise RegistryDenied(f"{host}: credentials refused (HTTP {response.status})",
                                             status=response.status, errors=parse_error_body(response.data))
                    if response.status >= 500 or response.status == 429:
                        raise Transient(f"{host}: HTTP {response.status}")
                    if response.status != 200:  # as Docker: anything else is not a registry
                        raise RegistryError(f"{host} does not look like a registry: GET {ep.base}/v2/ answered "
                                            f"HTTP {response.status}", status=response.status)
                    return
            self.transport.retrying(host, once)
        self.on_host(host, on)

    def on_host(self, host: str, fn: Callable[[Endpoint], T]) -> T:
        """`fn` on the host itself (never a mirror), trying its endpoints in order."""
        errors: list[tuple[Endpoint, ClientError]] = []
        for ep in self.config.host_endpoints(host, self.plain_http):
            if any(isinstance(exc, Unreachable) and exc.netloc == ep.netloc for _, exc in errors):
                continue  # the same host and port over the other scheme: no better
            try:
                return fn(ep)
            except NetworkError as exc:
                errors.append((ep, exc))
        raise _reported(errors)

    def get_manifest(self, ref: Reference, identifier: str | None = None,
                     accept: str = mt.MANIFEST_ACCEPT, media_type: str | None = None) -> FetchedManifest:
        """GET a manifest by tag or digest; verifies it against a requested digest or the
        registry's `Docker-Content-Digest` and parses it (as `media_type` when the registry does not
        say), on each endpoint in turn: what one mirror gets wrong, the next may serve."""
        identifier = identifier or ref.identifier
        expected = Digest.parse(identifier) if ":" in identifier else None
        what = str(ref) if identifier == ref.identifier else f"{ref}@{identifier}"

        def on(ep: Endpoint) -> FetchedManifest:
            def once() -> FetchedManifest:
                response = self.request(ref, ep, "GET", f"/manifests/{identifier}", {"Accept": accept}, preload=False)
                try:
                    length = response.headers.get("Content-Length")
                    if length and length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                        raise VerificationError(f"{ref}: manifest of {length} bytes refused "
                                                f"(limit {MAX_MANIFEST_SIZE})")
                    raw = response.read(MAX_MANIFEST_SIZE + 1)
                    if len(raw) > MAX_MANIFEST_SIZE:
                        raise VerificationError(f"{ref}: manifest larger than {MAX_MANIFEST_SIZE} bytes refused")
                except HttpError as exc:
                    raise Transient(f"{ep.netloc}: manifest download broke off ({type(exc).__name__})") from None
                finally:
                    response.release_conn()
                header = response.headers.get("Docker-Content-Digest")
                want = expected or (Digest.parse(header) if header and ":" in header else None)
                digest = Digest.of(raw, want.algorithm if want else "sha256")
                if want is not None and digest != want:
                    raise VerificationError(f"{ref}: manifest digest mismatch: expected {want}, got {digest}")
                content_type = mt.base_media_type(response.headers.get("Content-Type"))
                try:
                    manifest = parse_manifest(raw, content_type or media_type)
                except OCIValidationError as exc:
                    raise VerificationError(f"{what}: {exc.message}") from None
                return FetchedManifest(raw, content_type, digest, ep, manifest)
            return self.transport.retrying(f"{ep.netloc}: manifest {ref}", once)
        return self._each_endpoint(ref, on)

    def head_manifest(self, ref: Reference) -> Digest | None:
        """The digest the reference resolves to now (HEAD), or None when the registry does not say."""
        def on(ep: Endpoint) -> Digest | None:
            def once() -> Digest | None:
                response = self.request(ref, ep, "HEAD", f"/manifests/{ref.identifier}", {"Accept": mt.MANIFEST_ACCEPT})
                header = response.headers.get("Docker-Content-Digest")
                return Digest.parse(header) if header and ":" in header else None
            return self.transport.retrying(f"{ep.netloc}: manifest {ref}", once)
        return self._each_endpoint(ref, on)

    def blob_size(self, ref: Reference, digest: Digest) -> int:
        """The size of blob `digest` of `ref`'s repository (HEAD); RegistryNotFound when absent."""
        def on(ep: Endpoint) -> int:
            def once() -> int:
                response = self.request(ref, ep, "HEAD", f"/blobs/{digest}")
                length = response.headers.get("Content-Length")
                if not length or not length.isdigit():
                    raise RegistryError(f"{ep.netloc}: blob {digest} answered without a Content-Length",
                                        status=response.status)
                return int(length)
            return self.transport.retrying(f"{ep.netloc}: blob {digest}", once)
        return self._each_endpoint(ref, on)

    def list_tags(self, ref: Reference, limit: int = 100_000) -> list[str]:
        """Every tag of `ref`'s repository (following `Link` pages), at most `limit`."""
        def on(ep: Endpoint) -> list[str]:
            tags: list[str] = []
            suffix = "/tags/list"
            while suffix and len(tags) < limit:
                def once(page: str = suffix) -> Response:
                    return self.request(ref, ep, "GET", page, {"Accept": "application/json"})
                response = self.transport.retrying(f"{ep.netloc}: tags of {ref.repository}", once)
                try:
                    body = json.loads(response.data)
                    names = body.get("tags") or []
                    if not isinstance(names, list) or not all(isinstance(t, str) for t in names):
                        raise ValueError
                except (ValueError, AttributeError):
                    raise VerificationError(f"{ep.netloc}: tag list of {ref.repository} is not valid JSON") from None
                tags += names
                suffix = _next_page(response.headers.get("Link"), ep.base)
            return tags[:limit]
        return self._each_endpoint(ref, on)

    def fetch_blob(self, ref: Reference, desc: Descriptor, sink: BlobSink,
                   progress: Callable[[int], None] = lambda n: None, prefer: Endpoint | None = None) -> None:
        """Stream blob `desc` into `sink` (continuing from `sink.offset` with Range) and commit it.
        A blob that fails verification on a mirror is tried on the next endpoint."""
        def on(ep: Endpoint) -> None:
            for attempt in range(2):
                self.transport.retrying(f"{ep.netloc}: blob {desc.digest}",
                                        lambda: self._fetch_once(ref, ep, desc, sink, progress))
                try:
                    sink.commit()
                    return
                except VerificationError:
                    # A partial file left by an earlier run may not be a prefix of this blob (it was
                    # cut short mid-write, or tampered with): commit reset it, so start over once.
                    if attempt or not sink.resumed_from:
                        raise
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
            response = self.request(ref, ep, "GET", f"/blobs/{desc.digest}", headers, preload=False)
        except RangeRefused:
            sink.reset()
            raise Transient("range refused; starting over", 0.0) from None
        try:
            if offset and response.status != 206:
                sink.reset()  # the server ignored Range: take it from the start
                offset = 0
            elif offset and not (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
                sink.reset()
                raise Transient("unexpected Content-Range; starting over", 0.0)
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
        except HttpError as exc:
            raise Transient(f"{ep.netloc}: download of {desc.digest} broke off at {sink.offset} bytes "
                             f"({type(exc).__name__})") from None
        finally:
            response.release_conn()
        if sink.offset < desc.size:
            raise Short(f"{ep.netloc}: {desc.digest} ended at {sink.offset} of {desc.size} bytes")

    # -- pushes (to an endpoint of the host itself: see on_host) ---------------------------------
    def blob_exists(self, ref: Reference, ep: Endpoint, desc: Descriptor) -> bool:
        """Whether `ep` already has blob `desc` in `ref`'s repository (HEAD; a size that differs
        from the descriptor's counts as absent). Asks for a `pull,push` token."""
        def once() -> bool:
            try:
                response = self.request(ref, ep, "HEAD", f"/blobs/{desc.digest}", actions="pull,push")
            except NotFound:
                return False
            return response.headers.get("Content-Length") in (None, str(desc.size))
        return self.transport.retrying(f"{ep.netloc}: blob {desc.digest}", once)

    def upload_blob(self, ref: Reference, ep: Endpoint, desc: Descriptor, body: BinaryIO, size: int) -> None:
        """Upload blob `desc` in one piece (`POST …/blobs/uploads/`, then `PUT <Location>?digest=`),
        streaming `size` bytes from `body` (a seekable file, rewound for each attempt)."""
        def once() -> None:
            started = self.request(ref, ep, "POST", "/blobs/uploads/", {"Content-Length": "0"}, body=b"",
                                   actions="pull,push")
            location = started.headers.get("Location")
            if not location:
                raise RegistryError(f"{ep.netloc}: upload started without a Location", status=started.status)
            url = urljoin(f"{ep.base}/v2/{ref.repository}/blobs/uploads/", location)
            url += ("&" if "?" in url else "?") + f"digest={desc.digest}"
            self.request(ref, ep, "PUT", url, {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                         body=body, actions="pull,push")
        self.transport.retrying(f"{ep.netloc}: upload of {desc.digest}", once)

    def put_manifest(self, ref: Reference, ep: Endpoint, identifier: str, media_type: str, raw: bytes) -> None:
        """PUT manifest `raw` byte for byte (so its digest does not change) as tag or digest `identifier`."""
        def once() -> None:
            self.request(ref, ep, "PUT", f"/manifests/{identifier}", {"Content-Type": media_type}, body=raw,
                         actions="pull,push")
        self.transport.retrying(f"{ep.netloc}: manifest {ref}", once)
