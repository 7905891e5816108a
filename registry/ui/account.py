"""Logging in and out of the console (with `auth.enabled`): the same users, robots and failed-login
limits as `docker login` (`AuthService.login`), a signed session cookie (registry.ui.session), and
CSRF tokens on both forms."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..auth.service import AuthService, LoginFailed, RateLimited
from ..context import context
from ..errors import RegistryError
from ..handlers.base import run
from .forms import form, local_target, redirect, secure
from .render import page
from .session import (
    SESSION_COOKIE,
    Session,
    clear_cookie,
    csrf_token,
    csrf_valid,
    remember_csrf,
    renew_csrf,
    set_cookie,
)
from .viewer import Gate

EXPIRED_MESSAGE = "Your session has expired: log in again."


class Account:
    def __init__(self, gate: Gate, service: AuthService) -> None:
        self.gate = gate
        self.service = service

    async def login(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._submit(request)
        message = EXPIRED_MESSAGE if request.query_params.get("expired") else None
        return self._form(request, message, request.query_params.get("next"), status=200)

    def _form(self, request: Request, error: str | None, target: str | None, status: int,
              username: str = "") -> Response:
        request.scope["cargobay.ui"] = {"viewer": None, "csrf": csrf_token(request)}
        response = page(request, "login.html", status=status, title="Log in", error=error,
                        next=local_target(target), username=username)
        remember_csrf(request, response, secure(request))
        return response

    async def _submit(self, request: Request) -> Response:
        try:
            fields = await form(request)
        except RegistryError as exc:
            return self._form(request, exc.message, None, exc.status)
        target = fields.get("next")
        username = fields.get("username", "")
        if not csrf_valid(request, fields.get("csrf")):
            return self._form(request, "This form has expired: please try again.", target, 403, username)
        try:
            await self.service.login(request, username, fields.get("password", ""))
        except RateLimited as exc:
            return self._form(request, f"Too many failed logins: try again in {exc.retry_after} seconds.", target,
                              429, username)
        except LoginFailed:
            return self._form(request, "Wrong user name or password.", target, 401, username)
        response = redirect(local_target(target))
        # No Max-Age: the browser keeps it until it closes, and the server, which knows the session's
        # end, says "expired" (a cookie the browser dropped first would only look logged out).
        set_cookie(response, SESSION_COOKIE, self.gate.issue(username), secure(request))
        renew_csrf(request)  # a token planted before the login is worth nothing after it
        remember_csrf(request, response, secure(request))
        return response

    async def logout(self, request: Request) -> Response:
        try:
            fields = await form(request)
        except RegistryError as exc:
            return self._form(request, exc.message, None, exc.status)
        if not csrf_valid(request, fields.get("csrf")):
            return self._form(request, "This form has expired: please try again.", None, 403)
        session = await self.gate.session(request)
        if isinstance(session, Session):  # every session of the user issued until now ends, on every replica
            await run(context(request).storage.record_logout, session.user)
        response = redirect("/ui/login")
        clear_cookie(response, SESSION_COOKIE, secure(request))
        return response
