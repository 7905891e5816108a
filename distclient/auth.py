"""Answering registry authentication challenges: Bearer tokens and Basic.

A registry answers 401 with `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (get a token
from the realm, with Basic credentials or an identity token when there are any, anonymously
otherwise) or `Basic realm="…"` (send the credentials). The resulting `Authorization` header is
cached per (registry endpoint, scope) until the token expires, and is only ever attached to requests
for that endpoint: the client drops it on redirects to any other host or scheme. The credentials are
those stored for the host the user named (`puller login HOST`), also when the config's `server`
sends its requests elsewhere.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode, urlsplit

from . import credentials
from .credentials import Credentials
from .errors import AuthenticationError, NetworkError, Unreachable
from .hosts import Endpoint, origin

_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
_DEFAULT_TTL = 60.0


@dataclass(frozen=True)
class Identity:
    """Who is asking, for the words of its errors and token requests: the puller by default; a
    registry's pull-through cache names itself and where its upstream credentials are configured.
    The hints are format strings with `{host}`."""

    client_id: str = "puller"
    login_hint: str = "try `puller login {host}`"
    realm_hint: str = 'list it in token_realms under [hosts."{host}"] in the puller config'


PULLER = Identity()


class TokenResponse(Protocol):
    status: int
    data: bytes


#: (method, url, headers, body, (ca_file, tls_verify)) -> response with `.status` and `.data`; used for
#: token requests.
TokenHttp = Callable[[str, str, dict[str, str], bytes | None, tuple[str | None, bool]], TokenResponse]


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """`Bearer realm="x",scope="a:b:pull,push", Basic realm="y"` → [('bearer', {...}), ('basic', {...})].

    Scheme names are lower-cased; quoted values may contain commas.
    """
    out: list[tuple[str, dict[str, str]]] = []
    pos = 0
    scheme_re = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)(?=\s|$)")
    while pos < len(header):
        m = scheme_re.match(header, pos)
        if not m:
            break
        scheme, params = m.group(1).lower(), {}
        pos = m.end()
        while True:
            pm = re.compile(r"\s*,?\s*").match(header, pos)
            start = pm.end() if pm else pos
            p = _PARAM.match(header, start)
            if not p:
                break
            value = p.group(2) if p.group(2) is not None else p.group(3)
            params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = p.end()
        out.append((scheme, params))
    return out


def basic_header(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


class Authenticator:
    """Turns challenges into `Authorization` headers; thread-safe; one per client."""

    def __init__(self, http: TokenHttp, lookup: Callable[[str], Credentials | None] = credentials.lookup,
                 overrides: dict[str, Credentials] | None = None, identity: Identity = PULLER) -> None:
        self._http = http
        self.identity = identity
        self._lookup = lookup
        self._overrides = dict(overrides or {})
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._basic_hosts: set[str] = set()
        self._creds: dict[str, Credentials | None] = {}
        self._lock = threading.Lock()

    def credentials_for(self, host: str) -> Credentials | None:
        """The stored credentials of `host` (looked up once per process)."""
        host = credentials.normalize_host(host)
        with self._lock:
            if host in self._overrides:
                return self._overrides[host]
            if host not in self._creds:
                self._creds[host] = self._lookup(host)
            return self._creds[host]

    def cached(self, ep: Endpoint, scope: str) -> str | None:
        """The header to send with a request to endpoint `ep` for `scope`, when one is known."""
        with self._lock:
            entry = self._cache.get((ep.base, scope))
            if entry and entry[1] > time.monotonic():
                return entry[0]
            basic = ep.base in self._basic_hosts
        if basic:
            creds = self.credentials_for(ep.credentials_host)
            if creds and (creds.username or creds.password):
                return basic_header(creds)
        return None

    def answer(self, ep: Endpoint, scope: str, challenge_header: str) -> str:
        """An `Authorization` header answering a 401's `WWW-Authenticate` from `ep` (with the
        credentials of `ep.credentials_host`); raises AuthenticationError."""
        challenges = parse_challenges(challenge_header or "")
        netloc, host = ep.netloc, ep.credentials_host
        creds = self.credentials_for(host)
        for scheme, params in challenges:
            if scheme == "bearer" and params.get("realm"):
                header, ttl = self._token(ep, params, scope, creds)
                with self._lock:
                    self._cache[(ep.base, scope)] = (header, time.monotonic() + max(ttl - 10, 5))
                return header
        for scheme, _ in challenges:
            if scheme == "basic":
                if not creds or not (creds.username or creds.password):
                    raise AuthenticationError(
                        f"{netloc} requires credentials ({self.identity.login_hint.format(host=host)})")
                with self._lock:
                    self._basic_hosts.add(ep.base)
                return basic_header(creds)
        raise AuthenticationError(f"{netloc} asked for authentication this client cannot do: "
                                  f"{challenge_header[:120]!r}")

    def _token(self, ep: Endpoint, params: dict[str, str], scope: str, creds: Credentials | None) -> tuple[str, float]:
        netloc, realm = ep.netloc, params["realm"]
        where = urlsplit(realm)
        if where.scheme not in ("http", "https") or not where.hostname:
            raise AuthenticationError(f"{netloc}: invalid token realm {realm!r}")
        if creds and where.scheme == "http" and origin(realm) != origin(ep.base) and not ep.trusts_realm(realm):
            # In clear, to another origin (another host name or port, or down from HTTPS): only where
            # the config says so. Anonymous token requests carry no secret and go ahead.
            what = "of an HTTPS registry" if ep.base.startswith("https://") else "on another host"
            raise AuthenticationError(
                f"{netloc}: refusing to send credentials in clear to the plain-HTTP token realm {realm} {what} "
                f"({self.identity.realm_hint.format(host=ep.credentials_host)} to allow it)")
        # A realm on the registry's own host shares its CA file and verification setting.
        tls = (ep.ca_file, ep.tls_verify) if where.hostname == urlsplit(ep.base).hostname else (None, True)
        scopes = [s for s in (params.get("scope") or scope).split(" ") if s]
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in scopes]
        headers = {"Accept": "application/json"}
        try:
            if creds and creds.identity_token:
                form = urlencode([("grant_type", "refresh_token"), ("refresh_token", creds.identity_token),
                                  ("client_id", self.identity.client_id), *query]).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                response = self._http("POST", realm, headers, form, tls)
            else:
                if creds and (creds.username or creds.password):
                    headers["Authorization"] = basic_header(creds)
                query.append(("client_id", self.identity.client_id))
                url = realm + ("&" if "?" in realm else "?") + urlencode(query)
                response = self._http("GET", url, headers, None, tls)
        except Unreachable as exc:
            raise Unreachable.of(exc.netloc, exc.reason, exc.attempts, "the token server ") from None
        except NetworkError as exc:
            raise NetworkError(f"token server {urlsplit(realm).netloc}: {exc.message}") from None
        if response.status in (401, 403):
            who = "the stored credentials were refused" if creds else "anonymous access was refused"
            raise AuthenticationError(f"{netloc}: {who} by the token server (HTTP {response.status})")
        if response.status != 200:
            moved = " (a redirect elsewhere, not followed)" if 300 <= response.status < 400 else ""
            raise AuthenticationError(f"{netloc}: token server answered HTTP {response.status}{moved}")
        try:
            body = json.loads(response.data)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token, body = None, {}
        if not isinstance(token, str) or not token:
            raise AuthenticationError(f"{netloc}: token server sent no token")
        ttl = body.get("expires_in")
        return f"Bearer {token}", float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else _DEFAULT_TTL
