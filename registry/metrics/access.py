"""Who may read `/metrics`, on the main listener and on its own alike.

Anyone, when `metrics.anonymous` is on. Otherwise a user whose access rules say `metrics: true`
(the resource `registry:metrics:*`), proving it with

- Basic credentials, checked against `auth.htpasswd` even when `auth.basic` is off (Prometheus
  cannot do the token dance), through AuthService.login: the same failed-login events, the same
  rate limit;
- or a bearer token of this registry's issuer (or a trusted one) whose access claim holds
  `registry:metrics:*` (`GET /auth/token?scope=registry:metrics:*` with Basic credentials).

Nobody else: no credentials or wrong ones get 401 with a `WWW-Authenticate: Basic` challenge, a
user without the right 403, too many failed logins 429; all as the OCI error JSON. With auth off
and anonymous off there is nobody to let in, and the 403 says how to open it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from ocispec.errors import ErrorCode

from ..access import Access
from ..errors import RegistryError
from ..requestinfo import request_info
from ..settings import Settings

if TYPE_CHECKING:  # the auth package loads only when auth is on
    from ..auth.service import AuthService

#: What reading the metrics needs.
METRICS = Access("registry", "metrics", ("*",))
CLOSED = ("the metrics are not open to anyone: set metrics.anonymous: true, or turn on auth (auth.enabled) and "
          "give a user `metrics: true` in the access rules")


class MetricsAccess:
    def __init__(self, settings: Settings, service: AuthService | None) -> None:
        self.anonymous = settings.metrics.anonymous
        self.service = service

    async def check(self, request: Request) -> None:
        """Return when the caller may read the metrics; raise the RegistryError to answer otherwise."""
        if self.anonymous:
            return
        service = self.service
        if service is None:
            raise RegistryError(ErrorCode.DENIED, CLOSED)
        from ..auth.authorizer import parse_basic
        from ..auth.scopes import covers
        from ..auth.service import LoginFailed, RateLimited
        from ..auth.tokens import TokenError

        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            parsed = parse_basic(credentials)
            if parsed is None:
                raise self._unauthorized("malformed Basic credentials")
            user, password = parsed
            try:
                await service.login(request, user, password)
            except RateLimited as exc:
                raise RegistryError(ErrorCode.TOOMANYREQUESTS, "too many failed logins; retry later",
                                    headers={"Retry-After": str(exc.retry_after)}) from None
            except LoginFailed:
                raise self._unauthorized("invalid user name or password") from None
            request_info(request).user = user
            if service.rules().allows(user, [METRICS]):
                return
            raise RegistryError(ErrorCode.DENIED, f"{user} may not read the metrics: no access rule of theirs says "
                                                  "`metrics: true`")
        if scheme == "bearer":
            try:
                token = service.verify(credentials.strip())
            except TokenError:
                raise self._unauthorized("invalid or expired token") from None
            request_info(request).user = token.subject
            if covers(token.access, METRICS):
                return
            raise RegistryError(ErrorCode.DENIED, "the token does not grant registry:metrics:*")
        raise self._unauthorized("authentication required")

    def _unauthorized(self, message: str) -> RegistryError:
        realm = (self.service.service if self.service else "cargobay").replace("\\", "\\\\").replace('"', '\\"')
        return RegistryError(ErrorCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": f'Basic realm="{realm}"'})
