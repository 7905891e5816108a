"""One upstream registry the cache pulls through from: its distclient clients, its credentials, and
which of its repositories may be asked for.

Two clients share one authenticator (so tokens are fetched once and reused until they expire): a
patient one that retries transient failures (`proxy.retries`) for content nothing cached can stand
in for, and a quick one that tries once, for revalidating a tag whose cached answer can be served
if the upstream does not answer. The credentials configured for the upstream are the only ones
these clients ever send, and only to the upstream (and its token realm: distclient's rules);
nothing of a client's own request is passed on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from distclient import (
    BlobSink,
    ClientConfig,
    Credentials,
    FetchedManifest,
    HostConfig,
    Identity,
    NetworkConfig,
    RegistryClient,
)
from ocispec.digest import Digest
from ocispec.manifest import Descriptor
from ocispec.reference import DEFAULT_DOMAIN, Reference

from ..auth.rules import compile_pattern
from ..settings import ProxySettings, SettingsError, UpstreamSettings, upstream_password_env

DOCKER_HUB_URL = "https://registry-1.docker.io"


def _nobody_listens(host: str) -> None:
    return None


def upstream_url(settings: UpstreamSettings) -> str:
    if settings.url:
        return settings.url.rstrip("/")
    return DOCKER_HUB_URL if settings.host == DEFAULT_DOMAIN else f"https://{settings.host}"


def upstream_credentials(settings: UpstreamSettings, environ: Mapping[str, str]) -> Credentials | None:
    """The configured user and password (from `password_file`, else CARGOBAY_PROXY_<HOST>_PASSWORD);
    None for anonymous access. A password file that cannot be read stops the start."""
    password = ""
    if settings.password_file:
        try:
            password = Path(settings.password_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"proxy.upstreams[{settings.host}].password_file: cannot read "
                                f"{settings.password_file}: {exc.strerror or exc}") from None
    else:
        password = environ.get(upstream_password_env(settings.host), "")
    if not settings.username and not password:
        return None
    return Credentials(settings.username, password)


class Upstream:
    def __init__(self, settings: UpstreamSettings, proxy: ProxySettings,
                 environ: Mapping[str, str] | None = None, answered: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.answered = answered or _nobody_listens
        self.host = settings.host
        self.url = upstream_url(settings)
        self.tag_ttl = settings.tag_ttl
        self._patterns = tuple(compile_pattern(p) for p in settings.repositories)
        creds = upstream_credentials(settings, os.environ if environ is None else environ)
        hosts = {self.host: HostConfig(ca_file=settings.ca_file or None, tls_verify=settings.tls_verify,
                                       server=self.url)}
        identity = Identity(client_id="cargobay",
                            login_hint=f"set proxy.upstreams[{self.host}].username and its password",
                            realm_hint="use an https:// token realm")
        credentials = {self.host: creds} if creds else {}
        patient = NetworkConfig(retries=proxy.retries, backoff=0.5, connect_timeout=proxy.connect_timeout,
                                read_timeout=proxy.read_timeout)
        self.client = RegistryClient(ClientConfig(hosts, patient), credentials=credentials, identity=identity)
        quick = NetworkConfig(retries=0, connect_timeout=proxy.connect_timeout, read_timeout=proxy.read_timeout)
        self.quick = RegistryClient(ClientConfig(hosts, quick), authenticator=self.client.auth)

    def allows(self, name: str) -> bool:
        """Whether `name` (the upstream's own name, `library/redis`) may be pulled through."""
        return any(p.fullmatch(name) for p in self._patterns)

    def reference(self, name: str, identifier: str) -> Reference:
        if ":" in identifier:
            return Reference(self.host, name, None, Digest.parse(identifier))
        return Reference(self.host, name, identifier)

    # -- the calls the cache makes (synchronous: run them in the thread pool) ------------------
    # Each records that the upstream answered (registry.proxy.health); failures the cache records.
    def head_manifest(self, name: str, tag: str) -> Digest | None:
        """What `tag` resolves to now, asked once (HEAD: not counted against Docker Hub's pull limit)."""
        digest = self.quick.head_manifest(self.reference(name, tag))
        self.answered(self.host)
        return digest

    def get_manifest(self, name: str, identifier: str) -> FetchedManifest:
        """The manifest, verified against its digest (the one asked for, or the one the upstream says)."""
        fetched = self.client.get_manifest(self.reference(name, identifier))
        self.answered(self.host)
        return fetched

    def blob_size(self, name: str, digest: Digest) -> int:
        size = self.client.blob_size(self.reference(name, str(digest)), digest)
        self.answered(self.host)
        return size

    def fetch_blob(self, name: str, digest: Digest, size: int, sink: BlobSink) -> None:
        """Stream the blob into `sink` (resuming with Range after a broken connection) and commit it."""
        ref = self.reference(name, str(digest))
        self.client.fetch_blob(ref, Descriptor("application/octet-stream", digest, size), sink)
        self.answered(self.host)

    def list_tags(self, name: str, limit: int) -> list[str]:
        tags = self.quick.list_tags(self.reference(name, "latest"), limit)
        self.answered(self.host)
        return tags
