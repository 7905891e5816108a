"""The console's cookies: a signed session (who logged in, until when) and a CSRF token.

The session cookie is `base64(json).base64(hmac)`: the user, when it was issued and expires, and
the fingerprint of the user's password hash, so a changed password or a removed user ends every
session, as it ends refresh tokens (registry.auth); a logout ends every session issued before it
(storage's logout record, which every replica reads). Its key is derived from the token signing key
(`AuthService.derived_secret`): replicas that share tokens share sessions; nothing is kept on the
server, so any replica answers any page.

CSRF, three checks on every form that changes something (`form_allowed`): the browser says the
form came from this origin (`Sec-Fetch-Site`, `Origin`: what a sibling subdomain cannot fake); the
form repeats the random token of a cookie of its own (double submit; a login replaces it); and for
a logged-in user the form's token is that cookie's token signed with the session's key and bound to
the session (`SessionSigner.bind`), so a token planted from elsewhere is worth nothing. Both
cookies are HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "cargobay_ui"
CSRF_COOKIE = "cargobay_ui_csrf"
COOKIE_PATH = "/ui"
_CSRF_SCOPE_KEY = "cargobay.ui.csrf"


@dataclass(frozen=True)
class Session:
    user: str
    issued: float
    expires: float
    fingerprint: str


class Expired:
    """A session that was valid and has run out (the login page says so)."""


EXPIRED = Expired()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, secret: bytes, ttl: float) -> None:
        self._secret = secret
        self.ttl = ttl

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: str, fingerprint: str, now: float | None = None) -> str:
        issued = time.time() if now is None else now
        body = {"u": user, "iat": issued, "exp": int(issued + self.ttl), "pwh": fingerprint}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def bind(self, token: str, session: Session) -> str:
        """The form token of `session`: the CSRF cookie's `token` signed with the session."""
        return self._mac(f"csrf|{token}|{session.user}|{session.issued!r}")

    def read(self, value: str, now: float | None = None) -> Session | Expired | None:
        """The session a cookie holds; EXPIRED when it was ours and ran out; None when it is not
        ours (forged, damaged, another key's)."""
        payload, dot, mac = value.partition(".")
        if not dot or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["u"]), float(data["iat"]), float(data["exp"]), str(data["pwh"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if session.expires <= (time.time() if now is None else now):
            return EXPIRED
        return session


def secure_cookies(request: Request, public_url: str) -> bool:
    """Cookies are Secure when the console is reached over TLS (here, or at the public URL)."""
    return request.url.scheme == "https" or public_url.startswith("https://")


def set_cookie(response: Response, name: str, value: str, secure: bool) -> None:
    """A console cookie: only for `/ui`, never readable by script, never sent by another site; kept
    until the browser closes (a session's end is the server's to say)."""
    response.set_cookie(name, value, path=COOKIE_PATH, secure=secure, httponly=True,
                        samesite="strict")


def clear_cookie(response: Response, name: str, secure: bool) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, secure=secure, httponly=True, samesite="strict")


def csrf_token(request: Request) -> str:
    """The request's CSRF token: the cookie's, or a new one (`remember_csrf` sets it on the answer)."""
    token = request.scope.get(_CSRF_SCOPE_KEY)
    if token is None:
        token = request.cookies.get(CSRF_COOKIE) or ""
        if len(token) != 43:  # ours are 32 random bytes, base64url
            token = secrets.token_urlsafe(32)
        request.scope[_CSRF_SCOPE_KEY] = token
    return str(token)


def renew_csrf(request: Request) -> str:
    """A new token for what follows (after a login: a token planted before it is worth nothing)."""
    token = secrets.token_urlsafe(32)
    request.scope[_CSRF_SCOPE_KEY] = token
    return token


def remember_csrf(request: Request, response: Response, secure: bool) -> None:
    token = request.scope.get(_CSRF_SCOPE_KEY)
    if token is not None and token != request.cookies.get(CSRF_COOKIE):
        set_cookie(response, CSRF_COOKIE, str(token), secure)


def same_origin(request: Request, public_url: str) -> bool:
    """Whether the browser says the request comes from a page of this console's own origin. Browsers
    send `Sec-Fetch-Site` (and `Origin`) with every form POST; a sibling subdomain is `same-site`, not
    `same-origin`. Their absence (an old browser, a script) leaves the token checks to decide."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = public_url.split("://", 1)[-1].rstrip("/") if public_url else request.headers.get("host", "")
    # The scheme is not compared: behind a proxy that ends TLS the registry itself is asked over HTTP.
    return origin != "null" and origin.split("://", 1)[-1] == host


def tokens_match(submitted: object, expected: str) -> bool:
    return isinstance(submitted, str) and bool(expected) and hmac.compare_digest(submitted.encode(), expected.encode())
