"""The `auth:` section of the settings (imported by `registry.settings`; stdlib only)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..settings import Settings


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class TokenSettings:
    issuer: str = field(default="cargobay", metadata=_help(
        "`iss` of the tokens the built-in token endpoint issues "
        "(Distribution's `auth.token.issuer` must say the same)."))
    expiry: int = field(default=5, metadata=_help("Lifetime of an access token, in minutes.", min=1, max=1440))
    refresh_expiry: int = field(default=10080, metadata=_help(
        "Lifetime of a refresh token (`offline_token=true`, `access_type=offline`), in minutes; 0 issues none.",
        min=0, max=525600))
    algorithm: str = field(default="ES256", metadata=_help(
        "Signature algorithm of the generated key; a configured key decides by its type (EC P-256: ES256, RSA: RS256).",
        choices=("ES256", "RS256")))
    key: str = field(default="", metadata=_help(
        "PEM private key that signs tokens. Empty: a key generated once and kept in `auth.token.key_dir`."))
    certificate: str = field(default="", metadata=_help(
        "PEM certificate of that key (give it to Distribution as `rootcertbundle`). Empty: generated (self-signed)."))
    key_dir: str = field(default="", metadata=_help(
        "Where the generated key and certificate are kept (token-key.pem, token-cert.pem) when `key` is empty. "
        "Empty: `<storage.filesystem.root>/auth` with the filesystem driver; with s3, "
        "`$XDG_STATE_HOME/cargobay/auth` (default `~/.local/state/cargobay/auth`), local to each machine, so "
        "replicas should share one configured `key`."))
    extra_services: str = field(default="", metadata=_help(
        "Comma-separated further `service` names the token endpoint issues tokens for (other registries that "
        "trust this issuer); this registry itself only accepts tokens for `auth.service`."))


@dataclass(frozen=True)
class TrustSettings:
    issuer: str = field(default="", metadata=_help(
        "Also accept tokens from this external issuer (`iss`), verified with the keys below. Empty: none."))
    certificates: str = field(default="", metadata=_help(
        "PEM bundle of the external issuer's certificates (tokens name the key by libtrust `kid` or carry `x5c`)."))
    jwks: str = field(default="", metadata=_help("JWKS file (JSON) with the external issuer's public keys, by `kid`."))


@dataclass(frozen=True)
class RateLimitSettings:
    address_failures: int = field(default=10, metadata=_help(
        "Failed logins allowed from one client address per window; more get 429 TOOMANYREQUESTS.", min=1))
    user_failures: int = field(default=30, metadata=_help(
        "Failed logins allowed for one user name per window (from all addresses together).", min=1))
    window: float = field(default=300.0, metadata=_help(
        "The rate-limit window (seconds or a duration like 5m).", duration=True, min=1))


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = field(default=False, metadata=_help(
        "Require authentication and enforce the access rules (off: everyone may do everything)."))
    service: str = field(default="cargobay", metadata=_help(
        "Service name in the challenge; the audience (`aud`) every accepted token must carry."))
    realm: str = field(default="", metadata=_help(
        "Token endpoint URL sent in the challenge. Empty: this registry's own `/auth/token` "
        "(under `http.public_url`, or the request's host)."))
    htpasswd: str = field(default="", metadata=_help(
        "htpasswd file of users and robot accounts (bcrypt, as `htpasswd -B` writes it); re-read when it changes."))
    rules: str = field(default="", metadata=_help(
        "YAML file of access rules (users, groups, repository patterns, actions, anonymous pull); re-read when it "
        "changes. Empty: nobody may do anything."))
    basic: bool = field(default=False, metadata=_help(
        "Also accept Basic credentials directly on /v2/ requests (for clients that send them up front)."))
    token: TokenSettings = field(default_factory=TokenSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    ratelimit: RateLimitSettings = field(default_factory=RateLimitSettings)


def key_directory(settings: Settings) -> Path:
    """Where the generated token key lives: `auth.token.key_dir`, else beside the data (the
    filesystem root), else a per-user state directory; never the current directory, which depends
    on where the server happened to be started."""
    if settings.auth.token.key_dir:
        return Path(settings.auth.token.key_dir)
    if settings.storage.driver == "filesystem":
        return Path(settings.storage.filesystem.root) / "auth"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cargobay" / "auth"
