"""Where a registry host's requests go: per-host endpoints (mirrors, fallback, plain HTTP, CA file,
`server`, token realms) and the network retry settings, with their parsing from already-loaded
TOML tables (puller's config file; its other keys are puller's own):

```toml
[network]                          # optional; all keys optional
retries = 5                        # attempts after the first, per request
backoff = 0.5                      # first retry delay in seconds, doubled each time (capped at 30)
connect_timeout = 10
read_timeout = 60

[hosts."docker.io"]
mirrors = ["http://central:5000", { url = "https://m2.example", ca_file = "/etc/m2.pem" }]
fallback = true                    # try docker.io itself after the mirrors (default true)

[hosts."registry.local:5000"]
insecure = true                    # plain HTTP
ca_file = "/etc/ssl/local-ca.pem"  # for HTTPS hosts with a private CA
server = "https://other:443"       # optional: where the host itself is reached
token_realms = ["http://auth.local:5001/token"]  # plain-HTTP token realms on another host that
                                   # may receive this host's credentials (HTTPS realms need none)
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ocispec.reference import DEFAULT_DOMAIN, LEGACY_DOMAINS

from .errors import UsageError

#: Where docker.io itself answers.
DOCKER_HUB_SERVER = "https://registry-1.docker.io"

#: Parallel transfers a client plans for (its connection pools' size), unless told otherwise;
#: the puller's `--jobs` default. Here, not in `transport`, so it is known without the HTTP stack.
DEFAULT_JOBS = 4


@dataclass(frozen=True)
class Endpoint:
    """One place to send registry requests to: `base` is `scheme://host[:port][/prefix]`.

    `ns` is set on mirrors: the host the reference names, sent as the OCI `ns` query parameter.
    `cred_host` is the host whose stored credentials apply when that is not `base`'s own (a host
    reached through its config `server`). `token_realms` are the plain-HTTP token realms on other
    origins that the config allows this endpoint's credentials to go to.
    """

    base: str
    ns: str | None = None
    ca_file: str | None = None
    tls_verify: bool = True
    cred_host: str | None = None
    token_realms: tuple[str, ...] = ()

    def trusts_realm(self, realm: str) -> bool:
        """Whether the config names token realm `realm` (query aside) for this endpoint."""
        return realm_key(realm) in {realm_key(r) for r in self.token_realms}

    @property
    def netloc(self) -> str:
        return urlsplit(self.base).netloc

    @property
    def credentials_host(self) -> str:
        """Whose credentials to send here (what `puller login` was given)."""
        return self.cred_host or self.netloc

    @property
    def is_mirror(self) -> bool:
        return self.ns is not None


@dataclass(frozen=True)
class HostConfig:
    mirrors: tuple[Endpoint, ...] = ()
    fallback: bool = True
    insecure: bool = False
    ca_file: str | None = None
    tls_verify: bool = True
    server: str | None = None
    token_realms: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkConfig:
    retries: int = 5
    backoff: float = 0.5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


@dataclass(frozen=True)
class ClientConfig:
    """What the client needs to know: per-host settings (keyed by the host a reference names,
    `docker.io` for Docker Hub) and the network settings."""

    hosts: dict[str, HostConfig] = field(default_factory=dict)
    network: NetworkConfig = field(default_factory=NetworkConfig)

    def endpoints(self, host: str, plain_http: bool = False) -> list[Endpoint]:
        """Where to fetch `host`'s content from, in order: its mirrors, then (unless the config
        turns fallback off) the host itself."""
        hc = self.hosts.get(host, HostConfig())
        out = list(hc.mirrors)
        if hc.fallback or not out:
            out += self.host_endpoints(host, plain_http)
        return out

    def host_endpoints(self, host: str, plain_http: bool = False) -> list[Endpoint]:
        """The host itself, never a mirror (for login and push): one endpoint, or for a loopback host
        not in the config HTTPS then plain HTTP, as Docker does."""
        ep = self.host_endpoint(host, plain_http)
        if host not in self.hosts and is_loopback(host) and ep.base.startswith("https://"):
            return [ep, Endpoint("http://" + host)]
        return [ep]

    def host_endpoint(self, host: str, plain_http: bool = False) -> Endpoint:
        """The host itself (never a mirror); `plain_http` forces http."""
        hc = self.hosts.get(host, HostConfig())
        if hc.server:
            base = hc.server.rstrip("/")
        elif host == "docker.io":
            base = DOCKER_HUB_SERVER
        else:
            base = f"{'http' if (hc.insecure or plain_http) else 'https'}://{host}"
        if plain_http and base.startswith("https://"):
            base = "http://" + base[len("https://"):]
        return Endpoint(base, None, hc.ca_file, hc.tls_verify, host if hc.server else None, hc.token_realms)


def origin(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of a URL: what must match for credentials to go along."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def realm_key(url: str) -> tuple[str, str, str]:
    """What identifies a token realm: scheme, host[:port] and path (not the query)."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/") or "/"


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    return name == "localhost" or name.startswith("127.") or name == "::1"


def _mirror(host: str, item: Any) -> Endpoint:
    if isinstance(item, str):
        item = {"url": item}
    if not isinstance(item, dict) or not isinstance(item.get("url"), str):
        raise UsageError(f"hosts.{host}.mirrors: each mirror is a URL or a table with url")
    check_known(item, MIRROR_KEYS, f"a mirror of [hosts.{host}]")
    url = item["url"].rstrip("/")
    if "://" not in url:
        url = ("http://" if item.get("insecure") else "https://") + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"hosts.{host}.mirrors: invalid mirror URL {item['url']!r}")
    realms = _realms(item, f"hosts.{host}.mirrors[{url}]")
    return Endpoint(url, host, item.get("ca_file"), bool(item.get("tls_verify", True)), token_realms=realms)


def _realms(table: dict[str, Any], where: str) -> tuple[str, ...]:
    """`token_realms`: a list of http(s) URLs."""
    value = table.get("token_realms", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where}.token_realms must be a list of URLs")
    for url in value:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"{where}.token_realms: invalid URL {url!r}")
    return tuple(value)


def _bool(table: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"{where}.{key} must be true or false")
    return value


def _number(table: dict[str, Any], key: str, default: float, minimum: float, *, integer: bool = False,
            positive: bool = False) -> float:
    """`network.<key>`: a finite number (an integer with `integer`) of at least `minimum` (above it
    with `positive`); UsageError saying so otherwise."""
    value = table.get(key, default)
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value) and \
        (value > minimum if positive else value >= minimum)
    if not ok:
        want = "an integer" if integer else "a number"
        bound = f"greater than {minimum}" if positive else f"at least {minimum}"
        raise UsageError(f"network.{key} must be {want} {bound}, not {value!r}")
    return float(value)


NETWORK_KEYS = ("retries", "backoff", "connect_timeout", "read_timeout")
HOST_KEYS = ("mirrors", "fallback", "insecure", "ca_file", "tls_verify", "server", "token_realms")
MIRROR_KEYS = ("url", "insecure", "ca_file", "tls_verify", "token_realms")


def check_known(table: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    """A misspelt or misplaced key (`min_free_space` under [network]) would otherwise do nothing."""
    unknown = [k for k in table if k not in keys]
    if unknown:
        place = f" in {where}" if where else ""
        raise UsageError(f"unknown config key {unknown[0]!r}{place} (known there: {', '.join(keys)})")


def parse_hosts(raw_hosts: object) -> dict[str, HostConfig]:
    """The `hosts` table: host name → HostConfig (`index.docker.io` and the like become `docker.io`)."""
    hosts: dict[str, HostConfig] = {}
    if not isinstance(raw_hosts, dict):
        raise UsageError("hosts must be a table of host tables")
    for host, table in raw_hosts.items():
        where = f"hosts.{host}"
        if not isinstance(table, dict):
            raise UsageError(f"{where} must be a table")
        check_known(table, HOST_KEYS, f"[{where}]")
        mirrors = table.get("mirrors", [])
        if not isinstance(mirrors, list):
            raise UsageError(f"{where}.mirrors must be a list")
        ca_file = table.get("ca_file")
        if ca_file is not None and not isinstance(ca_file, str):
            raise UsageError(f"{where}.ca_file must be a path")
        server = table.get("server")
        if server is not None and not isinstance(server, str):
            raise UsageError(f"{where}.server must be a URL")
        host_key = DEFAULT_DOMAIN if host in LEGACY_DOMAINS else host
        hosts[host_key] = HostConfig(
            tuple(_mirror(host_key, m) for m in mirrors), _bool(table, "fallback", True, where),
            _bool(table, "insecure", False, where), ca_file, _bool(table, "tls_verify", True, where), server,
            _realms(table, where))
    return hosts


def parse_network(net: object) -> NetworkConfig:
    """The `network` table."""
    if not isinstance(net, dict):
        raise UsageError("network must be a table")
    check_known(net, NETWORK_KEYS, "[network]")
    defaults = NetworkConfig()
    return NetworkConfig(
        int(_number(net, "retries", defaults.retries, 0, integer=True)),
        _number(net, "backoff", defaults.backoff, 0),
        _number(net, "connect_timeout", defaults.connect_timeout, 0, positive=True),
        _number(net, "read_timeout", defaults.read_timeout, 0, positive=True))


def parse_client_config(data: dict[str, Any]) -> ClientConfig:
    """A ClientConfig from the `hosts` and `network` tables of already-parsed TOML data (other
    keys are the caller's to check)."""
    return ClientConfig(parse_hosts(data.get("hosts", {})), parse_network(data.get("network", {})))
