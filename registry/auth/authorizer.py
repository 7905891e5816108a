"""The `Authorizer` the routes call (registry.access): who is asking, and may they?

Who: a Bearer token (verified; its `access` claim is all it may do), Basic credentials when
`auth.basic` is on (checked against htpasswd; the rules say what they may do), or nobody (only
anonymous pull patterns). The answer never depends on whether the repository exists: the check runs
before any handler looks at storage.

- nobody, or an anonymous token, lacking the access → 401 UNAUTHORIZED with the Bearer challenge
  naming the scope; an invalid or expired token → the same with `error="invalid_token"`.
- a token of the built-in issuer whose user the rules would allow → 401 with
  `error="insufficient_scope"` (the client fetches a token for this scope); a user the rules do not
  allow, or valid Basic credentials without the right → 403 DENIED.
- a token of an external issuer lacking the access → 401 `insufficient_scope`, as Distribution
  answers (this registry cannot know what that issuer would grant).
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from starlette.requests import Request

from ocispec.errors import ErrorCode

from ..access import Access
from ..errors import RegistryError
from ..requestinfo import request_info
from .scopes import covers
from .service import AuthService, LoginFailed, RateLimited, client_address
from .tokens import TokenError

log = logging.getLogger("cargobay.auth")
_STATE_KEY = "cargobay.auth.principal"


@dataclass(frozen=True)
class Principal:
    kind: str                           # "anonymous", "token" or "basic"
    subject: str | None = None          # None: nobody in particular
    issuer: str | None = None           # for tokens
    access: tuple[Access, ...] | None = None  # for tokens: everything they grant


def parse_basic(value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep and username else None


def _detail(needed: list[Access]) -> list[dict[str, str]]:
    return [{"Type": a.type, "Class": "", "Name": a.name, "Action": action} for a in needed for action in a.actions]


class TokenAuthorizer:
    def __init__(self, service: AuthService) -> None:
        self.service = service

    # -- the seam --------------------------------------------------------------------------------
    async def authorize(self, request: Request, needed: list[Access]) -> None:
        principal = await self._principal(request, needed)
        if self._permitted(principal, needed):
            return
        raise self._refusal(request, principal, needed)

    async def permits(self, request: Request, access: Access) -> bool:
        try:
            principal = await self._principal(request, [access])
        except RegistryError:
            return False
        return self._permitted(principal, [access])

    # -- who is asking ---------------------------------------------------------------------------
    async def _principal(self, request: Request, needed: list[Access]) -> Principal:
        cached = request.scope.get(_STATE_KEY)
        if isinstance(cached, Principal):
            return cached
        principal = await self._identify(request, needed)
        request.scope[_STATE_KEY] = principal
        request_info(request).user = principal.subject or ""  # the logs' and the events' user
        return principal

    async def _identify(self, request: Request, needed: list[Access]) -> Principal:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            try:
                token = self.service.verify(credentials.strip())
            except TokenError as exc:
                log.info("refused a token from %s: %s", client_address(request), exc)
                raise self._unauthorized(request, needed, "invalid_token") from None
            return Principal("token", token.subject or None, token.issuer, tuple(token.access))
        if scheme == "basic" and self.service.settings.auth.basic:
            parsed = parse_basic(credentials)
            if parsed is None:
                raise self._unauthorized(request, needed)
            username, password = parsed
            try:
                await self.service.login(request, username, password)
            except RateLimited as exc:
                raise RegistryError(ErrorCode.TOOMANYREQUESTS, "too many failed logins; retry later",
                                    headers={"Retry-After": str(exc.retry_after)}) from None
            except LoginFailed:
                raise self._unauthorized(request, needed) from None
            return Principal("basic", username)
        return Principal("anonymous")

    # -- may they --------------------------------------------------------------------------------
    def _permitted(self, principal: Principal, needed: list[Access]) -> bool:
        if not needed:  # GET /v2/: any valid credentials; nobody gets the challenge that names the realm
            return principal.kind != "anonymous"
        if principal.access is not None:
            return all(covers(principal.access, n) for n in needed)
        return self.service.rules().allows(principal.subject, needed)

    def _refusal(self, request: Request, principal: Principal, needed: list[Access]) -> RegistryError:
        if principal.kind == "anonymous":
            return self._unauthorized(request, needed)
        if principal.kind == "token":
            own = principal.issuer == self.service.issuer
            if principal.subject is None or not own or self.service.rules().allows(principal.subject, needed):
                return self._unauthorized(request, needed, "insufficient_scope")
        return RegistryError(ErrorCode.DENIED)

    def _unauthorized(self, request: Request, needed: list[Access], error: str | None = None) -> RegistryError:
        return RegistryError(ErrorCode.UNAUTHORIZED, detail=_detail(needed) or None,
                             headers={"WWW-Authenticate": self.service.challenge(request, needed, error)})
