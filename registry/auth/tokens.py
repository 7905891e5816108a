"""JWT issue and verification for the Docker token flow (compact JWS, ES256/RS256 and kin).

Verification refuses, in this order: anything that is not three base64url parts of JSON objects
(duplicate keys included), an algorithm outside the asymmetric set (so `none` and `HS256` never
verify), a key it does not trust (by libtrust `kid`, an `x5c` chain up to a trusted certificate, or
a `jwk` header whose libtrust id is trusted), a bad signature, an issuer other than the one that
key belongs to, an audience other than ours, an expired or not-yet-valid token (30 s leeway) and
a malformed `access` claim. The reasons are safe to log: they never quote the token.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import itertools
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from ..access import Access
from ..errors import RegistryBaseError
from .keys import ALGORITHMS, PublicKey, SigningKey, from_jwk, libtrust_kid, sign, suits, verify_signature
from .scopes import from_claim, to_claim

LEEWAY = 30
MAX_TOKEN_CHARS = 16384
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class TokenError(RegistryBaseError):
    """A token that does not verify; `str()` says why without quoting it. The authorizer answers it
    401 `invalid_token`."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise TokenError("malformed token: duplicate JSON key")
        result[key] = value
    return result


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TokenError("malformed token") from None
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    return value


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode(header: dict[str, Any], claims: dict[str, Any], key: SigningKey) -> str:
    signing_input = b64url(_canonical(header)) + "." + b64url(_canonical(claims))
    return signing_input + "." + b64url(sign(header["alg"], key.private_key, signing_input.encode()))


def issue(key: SigningKey, *, issuer: str, audience: str, subject: str, access: Iterable[Access], lifetime: int,
          now: float | None = None, extra: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """A signed token and its claims. `lifetime` in seconds."""
    issued = int(now if now is not None else time.time())
    claims = {"iss": issuer, "sub": subject, "aud": audience, "exp": issued + lifetime, "nbf": issued,
              "iat": issued, "jti": secrets.token_urlsafe(18), "access": to_claim(access), **(extra or {})}
    header = {"typ": "JWT", "alg": key.algorithm, "kid": key.kid}
    return encode(header, claims, key), claims


# -- trust ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustedKey:
    key: PublicKey
    issuer: str


@dataclass
class TrustStore:
    keys: dict[str, TrustedKey] = field(default_factory=dict)
    roots: list[tuple[x509.Certificate, str]] = field(default_factory=list)

    def add_key(self, key: PublicKey, issuer: str, kid: str | None = None) -> None:
        self.keys[kid or libtrust_kid(key)] = TrustedKey(key, issuer)

    def add_certificates(self, certs: Iterable[x509.Certificate], issuer: str) -> None:
        for cert in certs:
            self.add_key(cert.public_key(), issuer)  # type: ignore[arg-type]
            self.roots.append((cert, issuer))

    def resolve(self, header: dict[str, Any], now: float) -> TrustedKey:
        """The trusted key a token header names; TokenError when it names none we trust."""
        if header.get("x5c") is not None:
            return self._from_chain(header["x5c"], now)
        if header.get("jwk") is not None:
            try:
                kid = libtrust_kid(from_jwk(header["jwk"]))
            except (ValueError, TypeError, AttributeError):
                raise TokenError("malformed jwk header") from None
            if kid in self.keys:
                return self.keys[kid]
            raise TokenError("token signed by an untrusted key")
        named = header.get("kid")
        if isinstance(named, str) and named in self.keys:
            return self.keys[named]
        raise TokenError("token signed by an untrusted key" if named else "token names no signing key")

    def _from_chain(self, x5c: Any, now: float) -> TrustedKey:
        if not isinstance(x5c, list) or not x5c or len(x5c) > 5 or not all(isinstance(c, str) for c in x5c):
            raise TokenError("malformed x5c header")
        try:
            chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c]
        except (ValueError, binascii.Error):
            raise TokenError("malformed x5c header") from None
        moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
        for cert in chain:
            if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
                raise TokenError("x5c certificate outside its validity period")
        try:
            for child, parent in itertools.pairwise(chain):
                child.verify_directly_issued_by(parent)
        except Exception:
            raise TokenError("x5c chain does not verify") from None
        top = chain[-1]
        for root, issuer in self.roots:
            if top == root:
                return TrustedKey(chain[0].public_key(), issuer)  # type: ignore[arg-type]
            try:
                top.verify_directly_issued_by(root)
            except Exception:  # noqa: S112 (not issued by this root: try the next one)
                continue
            return TrustedKey(chain[0].public_key(), issuer)  # type: ignore[arg-type]
        raise TokenError("x5c chain does not lead to a trusted certificate")


# -- verification --------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifiedToken:
    issuer: str
    subject: str
    access: list[Access]
    claims: dict[str, Any]


def _number(claims: dict[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenError(f"token has no {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenError(f"token {name} is not a number")
    return float(value)


def verify(token: str, trust: TrustStore, audiences: Iterable[str], now: float | None = None,
           leeway: float = LEEWAY) -> VerifiedToken:
    now = time.time() if now is None else now
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("token too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token")
    header = _json_object(unb64url(parts[0]))
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise TokenError(f"token algorithm {str(alg)[:16]!r} is not accepted")
    if "crit" in header:
        raise TokenError("token has critical header parameters")
    signature = unb64url(parts[2])
    trusted = trust.resolve(header, now)
    if not suits(alg, trusted.key):
        raise TokenError("token algorithm does not match its key")
    if not verify_signature(alg, trusted.key, f"{parts[0]}.{parts[1]}".encode(), signature):
        raise TokenError("bad token signature")
    claims = _json_object(unb64url(parts[1]))
    if claims.get("iss") != trusted.issuer:
        raise TokenError("token from an untrusted issuer")
    aud = claims.get("aud")
    aud_list = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not {a for a in aud_list if isinstance(a, str)} & set(audiences):
        raise TokenError("token intended for another audience")
    exp = _number(claims, "exp", required=True)
    if now > exp + leeway:  # type: ignore[operator]
        raise TokenError("token expired")
    nbf = _number(claims, "nbf", required=False)
    if nbf is not None and now < nbf - leeway:
        raise TokenError("token not valid yet")
    iat = _number(claims, "iat", required=False)
    if iat is not None and now < iat - leeway:
        raise TokenError("token issued in the future")
    subject = claims.get("sub", "")
    if not isinstance(subject, str):
        raise TokenError("token subject is not a string")
    try:
        access = from_claim(claims.get("access"))
    except ValueError as exc:
        raise TokenError(f"malformed access claim: {exc}") from None
    return VerifiedToken(trusted.issuer, subject, access, claims)
