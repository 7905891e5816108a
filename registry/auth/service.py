"""The assembled auth pieces, built once from the settings and shared by the authorizer (checks
every request) and the token endpoint (issues tokens): users, rules, the signing key, the keys it
trusts, the failed-login limiter and the challenge it sends."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..access import Access
from ..context import context
from ..errors import RegistryBaseError
from ..events import Event
from ..settings import Settings, SettingsError
from .files import Reloading
from .keys import (
    CERT_FILE,
    KEY_FILE,
    SigningKey,
    key_directory,
    load_certificates,
    load_jwks,
    load_signing_key,
    write_key_pair,
)
from .ratelimit import FailureLimiter
from .rules import Rules, load_rules
from .scopes import format_scope
from .tokens import TokenError, TrustStore, VerifiedToken, issue, verify
from .users import DEFAULT_COST, Users, VerifiedCache, dummy_hash, load_htpasswd

log = logging.getLogger("cargobay.auth")
REFRESH = "refresh"


class LoginFailed(RegistryBaseError):
    """Wrong user name or password (which of the two is never said). Control flow between `login`
    and its callers, which answer it (401, or OAuth2's invalid_grant)."""


class RateLimited(RegistryBaseError):
    """Too many failed logins: try again in `retry_after` seconds (429 with Retry-After)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after}s")
        self.retry_after = retry_after


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def login_failed(request: Request, username: str, why: str) -> None:
    await context(request).events.emit(request, Event("login.failed", user=username[:64], detail=why))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclass
class AuthService:
    settings: Settings
    signing: SigningKey
    trust: TrustStore       # every key whose tokens this registry accepts
    own_trust: TrustStore   # only the built-in issuer's key (refresh tokens)
    users_file: Reloading[Users] | None
    rules_file: Reloading[Rules] | None
    limiter: FailureLimiter
    cache: VerifiedCache

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthService:
        """Raises SettingsError (one line) when a key, certificate, JWKS, htpasswd or rules file is unusable."""
        try:
            return cls._build(settings)
        except (ValueError, OSError) as exc:
            raise SettingsError(f"auth: {exc}") from None

    @classmethod
    def _build(cls, settings: Settings) -> AuthService:
        auth = settings.auth
        token = auth.token
        users = Reloading(auth.htpasswd, load_htpasswd) if auth.htpasswd else None
        rules = Reloading(auth.rules, load_rules) if auth.rules else None
        if token.key:
            signing = load_signing_key(Path(token.key), Path(token.certificate) if token.certificate else None)
        else:
            key_dir = key_directory(settings)
            key_path, cert_path = key_dir / KEY_FILE, key_dir / CERT_FILE
            if not key_path.exists() and write_key_pair(key_path, cert_path, token.algorithm, token.issuer):
                log.info("generated a %s token signing key in %s", token.algorithm, key_dir)
                if settings.storage.driver != "filesystem":
                    log.warning("the token key is local to this machine: replicas sharing the bucket need the same "
                                "key (set auth.token.key, or auth.token.key_dir to a shared directory)")
            signing = load_signing_key(key_path, cert_path if cert_path.exists() else None)
        own = TrustStore()
        own.add_key(signing.public_key, token.issuer, signing.kid)
        trust = TrustStore(dict(own.keys), list(own.roots))
        if auth.trust.issuer:
            if auth.trust.certificates:
                trust.add_certificates(load_certificates(Path(auth.trust.certificates)), auth.trust.issuer)
            if auth.trust.jwks:
                for kid, key in load_jwks(Path(auth.trust.jwks)).items():
                    trust.add_key(key, auth.trust.issuer, kid)
        limits = auth.ratelimit
        dummy_hash(DEFAULT_COST)  # pay for the dummy hash at start, not in the first login
        return cls(settings, signing, trust, own, users, rules,
                   FailureLimiter(limits.address_failures, limits.user_failures, limits.window), VerifiedCache())

    # -- the pieces --------------------------------------------------------------------------------
    @property
    def service(self) -> str:
        return self.settings.auth.service

    @property
    def issuer(self) -> str:
        return self.settings.auth.token.issuer

    def services(self) -> set[str]:
        extra = {s.strip() for s in self.settings.auth.token.extra_services.split(",") if s.strip()}
        return {self.service} | extra

    def rules(self) -> Rules:
        return self.rules_file.get() if self.rules_file else Rules()

    def users(self) -> Users:
        return self.users_file.get() if self.users_file else Users({})

    # -- logins ----------------------------------------------------------------------------------
    async def login(self, request: Request, username: str, password: str) -> None:
        """Return when the password is right; raise RateLimited or LoginFailed (each a
        `login.failed` event: the name tried, never the password)."""
        address = client_address(request)
        retry = self.limiter.begin(address, username)
        if retry is not None:
            log.warning("login refused, too many failures: user %r from %s", username[:64], address)
            await login_failed(request, username, "too many failed logins")
            raise RateLimited(retry)
        failed = False
        try:
            users = self.users()
            fingerprint = users.fingerprint(username)
            if self.cache.hit(username, password, fingerprint):
                return
            if not await run_in_threadpool(users.verify, username, password):
                failed = True
                log.warning("failed login: user %r from %s", username[:64], address)
                await login_failed(request, username, "wrong user name or password")
                raise LoginFailed()
            self.cache.add(username, password, fingerprint)
        finally:
            self.limiter.end(address, username, failed)

    # -- tokens ----------------------------------------------------------------------------------
    def verify(self, token: str) -> VerifiedToken:
        verified = verify(token, self.trust, [self.service])
        if verified.claims.get("token_use") == REFRESH:
            raise TokenError("a refresh token is not an access token")
        return verified

    def token_response(self, subject: str | None, service: str, requested: list[Access],
                       offline: bool = False) -> dict[str, Any]:
        """The token endpoint's answer: an access token holding what the rules grant of `requested`."""
        granted = self.rules().grant(subject, requested)
        lifetime = self.settings.auth.token.expiry * 60
        token, claims = issue(self.signing, issuer=self.issuer, audience=service, subject=subject or "",
                              access=granted, lifetime=lifetime)
        issued_at = datetime.datetime.fromtimestamp(claims["iat"], datetime.UTC)
        body: dict[str, Any] = {"token": token, "access_token": token, "expires_in": lifetime,
                                "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "scope": format_scope(granted)}
        if offline and subject and self.settings.auth.token.refresh_expiry:
            body["refresh_token"] = self.refresh_token(subject)
        return body

    def refresh_token(self, subject: str) -> str:
        token, _ = issue(self.signing, issuer=self.issuer, audience=self.issuer + "#" + REFRESH, subject=subject,
                         access=[], lifetime=self.settings.auth.token.refresh_expiry * 60,
                         extra={"token_use": REFRESH, "pwh": self.users().fingerprint(subject)})
        return token

    def redeem_refresh_token(self, token: str) -> str:
        """The user a refresh token speaks for; LoginFailed when it is invalid, expired, or its user was
        removed or changed password since."""
        try:
            verified = verify(token, self.own_trust, [self.issuer + "#" + REFRESH])
        except TokenError as exc:
            log.info("refused a refresh token: %s", exc)
            raise LoginFailed() from None
        fingerprint = self.users().fingerprint(verified.subject)
        bound = verified.claims.get("pwh")
        if verified.claims.get("token_use") != REFRESH or not fingerprint or not isinstance(bound, str) \
                or not hmac.compare_digest(bound, fingerprint):
            log.info("refused a refresh token for %r: user removed or password changed", verified.subject[:64])
            raise LoginFailed()
        return verified.subject

    def derived_secret(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose` (the console's session cookies), derived from the signing
        key: replicas that share the key (as they must, for tokens) share it; a new key revokes it."""
        der = self.signing.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
        return hmac.new(der, b"cargobay derived secret: " + purpose.encode(), hashlib.sha256).digest()

    # -- the challenge ---------------------------------------------------------------------------
    def realm(self, request: Request) -> str:
        if self.settings.auth.realm:
            return self.settings.auth.realm
        base = self.settings.http.public_url or str(request.base_url)
        return base.rstrip("/") + "/auth/token"

    def challenge(self, request: Request, needed: list[Access], error: str | None = None) -> str:
        parts = [f'realm="{_quote(self.realm(request))}"', f'service="{_quote(self.service)}"']
        if needed:
            parts.append(f'scope="{_quote(format_scope(needed))}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)
