"""The built-in token endpoint of the Docker token flow, and the issuer's public keys.

- `GET /auth/token?service=…&scope=…[&offline_token=true]`, with Basic credentials (docker,
  skopeo, podman) or none (an anonymous token: only anonymous pull patterns).
- `POST /auth/token`, form-encoded OAuth2: `grant_type=password` (username, password) or
  `grant_type=refresh_token` (refresh_token), with service, scope (space-separated), client_id and
  `access_type=offline` for a refresh token (containerd, docker login).
- `GET /auth/jwks`: the signing key as a JWKS, for other services that verify these tokens.

Whatever is asked, a token holds only what the rules grant of it. Bad credentials get 401 (GET) or
400 `invalid_grant` (POST, as OAuth2 says); too many failures get 429 with Retry-After. Nothing
here logs a password or a token. GET's errors are the OCI error JSON every route answers with
(raised as RegistryError, rendered by registry.errors); POST's are OAuth2's (`oauth2_error`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ocispec.errors import ErrorCode

from ..errors import RegistryError
from ..handlers.base import FormInvalid, read_form
from .authorizer import parse_basic
from .keys import to_jwk
from .scopes import MAX_SCOPES, parse_scopes
from .service import AuthService, LoginFailed, RateLimited, client_address, login_failed

MAX_FORM_BYTES = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def _refuse(code: ErrorCode, message: str, headers: dict[str, str] | None = None) -> RegistryError:
    """An error of GET /auth/token: the OCI error JSON, never cached."""
    return RegistryError(code, message, headers={**NO_STORE, **(headers or {})})


def oauth2_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    """The one renderer of POST /auth/token's errors: OAuth2's JSON (RFC 6749 section 5.2), never
    cached, not the OCI error JSON, because OAuth2 clients (containerd, docker login) parse these."""
    return _json({"error": error, "error_description": description}, status, headers)


def _too_many(exc: RateLimited) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)}


def token_routes(service: AuthService) -> list[Route]:
    def check_service(name: str | None) -> str | None:
        name = name or service.service
        return name if name in service.services() else None

    async def get_token(request: Request) -> Response:
        params = request.query_params
        audience = check_service(params.get("service"))
        if audience is None:
            raise _refuse(ErrorCode.DENIED, "this token server does not issue tokens for that service")
        scopes = parse_scopes(params.getlist("scope"))
        if len(scopes) > MAX_SCOPES:
            raise _refuse(ErrorCode.DENIED, f"at most {MAX_SCOPES} scopes per token")
        subject = None
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            parsed = parse_basic(credentials)
            try:
                if parsed is None:
                    raise LoginFailed()
                await service.login(request, *parsed)
            except RateLimited as exc:
                raise _refuse(ErrorCode.TOOMANYREQUESTS, "too many failed logins; retry later",
                              _too_many(exc)) from None
            except LoginFailed:
                raise _refuse(ErrorCode.UNAUTHORIZED, "invalid user name or password",
                              {"WWW-Authenticate": f'Basic realm="{service.service}"'}) from None
            subject = parsed[0]
        offline = params.get("offline_token", "").lower() == "true"
        return _json(service.token_response(subject, audience, scopes, offline))

    async def post_token(request: Request) -> Response:
        try:
            form = await read_form(request, MAX_FORM_BYTES)
        except FormInvalid as exc:
            return oauth2_error(400, "invalid_request", str(exc))
        audience = check_service(form.get("service"))
        if audience is None:
            return oauth2_error(400, "invalid_request", "this token server does not issue tokens for that service")
        scopes = parse_scopes([form.get("scope", "")])
        if len(scopes) > MAX_SCOPES:
            return oauth2_error(400, "invalid_scope", f"at most {MAX_SCOPES} scopes per token")
        grant = form.get("grant_type")
        address = client_address(request)
        try:
            if grant == "password":
                username = form.get("username", "")
                if not username:
                    return oauth2_error(400, "invalid_request", "username and password are required")
                await service.login(request, username, form.get("password", ""))
                subject = username
            elif grant == "refresh_token":
                retry = service.limiter.retry_after(address, None)
                if retry is not None:
                    raise RateLimited(retry)
                try:
                    subject = service.redeem_refresh_token(form.get("refresh_token", ""))
                except LoginFailed:
                    service.limiter.failed(address, None)
                    await login_failed(request, "", "invalid refresh token")
                    raise
            else:
                return oauth2_error(400, "unsupported_grant_type", "grant_type must be password or refresh_token")
        except RateLimited as exc:
            return oauth2_error(429, "too_many_requests", "too many failed logins; retry later", _too_many(exc))
        except LoginFailed:
            return oauth2_error(400, "invalid_grant", "invalid credentials")
        offline = form.get("access_type") == "offline"
        return _json(service.token_response(subject, audience, scopes, offline))

    async def jwks(request: Request) -> Response:
        return JSONResponse({"keys": [to_jwk(service.signing.public_key, service.signing.kid)]})

    async def token(request: Request) -> Response:
        return await (post_token(request) if request.method == "POST" else get_token(request))

    return [Route("/auth/token", token, methods=["GET", "POST"]), Route("/auth/jwks", jwks, methods=["GET"])]
