"""Logging in and out of the console (with `auth.enabled`): the same users, robots and failed-login
limits as `docker login` (`AuthService.login`), a signed session cookie (registry.ui.session), and
the origin and CSRF checks on both forms (`Gate.form_allowed`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from storage import StorageError

from ..auth.service import AuthService, LoginFailed, RateLimited
from ..context import context
from ..errors import RegistryError, to_registry_error
from ..handlers.base import run
from .forms import STATE_KEY, failure_page, form, local_target, redirect, secure
from .render import page
from .session import SESSION_COOKIE, Session, clear_cookie, remember_csrf, renew_csrf, set_cookie
from .viewer import Gate

EXPIRED_MESSAGE = "Your session has expired: log in again."
FORGED_MESSAGE = "This form has expired or did not come from this console: please try again."


class Account:
    def __init__(self, gate: Gate, service: AuthService) -> None:
        self.gate = gate
        self.service = service

    async def login(self, request: Request) -> Response:
        try:
            if request.method == "POST":
                return await self._submit(request)
            message = EXPIRED_MESSAGE if request.query_params.get("expired") else None
            return self._form(request, message, request.query_params.get("next"), status=200)
        except (RegistryError, StorageError) as exc:
            return self._failed(request, to_registry_error(exc))

    async def logout(self, request: Request) -> Response:
        try:
            fields = await form(request)
            session = await self.gate.session(request)
            bound = session if isinstance(session, Session) else None
            if not self.gate.form_allowed(request, fields.get("csrf"), bound):
                return self._form(request, FORGED_MESSAGE, None, 403)
            if bound is not None:  # every session of the user issued until now ends, on every replica
                await run(context(request).storage.record_logout, bound.user)
        except (RegistryError, StorageError) as exc:
            return self._failed(request, to_registry_error(exc))
        response = redirect("/ui/login")
        clear_cookie(response, SESSION_COOKIE, secure(request))
        return response

    def _failed(self, request: Request, error: RegistryError) -> Response:
        request.scope[STATE_KEY] = {"viewer": None, "csrf": ""}
        return failure_page(request, error)

    def _form(self, request: Request, error: str | None, target: str | None, status: int,
              username: str = "") -> Response:
        request.scope[STATE_KEY] = {"viewer": None, "csrf": self.gate.form_token(request, None)}
        response = page(request, "login.html", status=status, title="Log in", error=error,
                        next=local_target(target), username=username)
        remember_csrf(request, response, secure(request))
        return response

    async def _submit(self, request: Request) -> Response:
        fields = await form(request)
        target = fields.get("next")
        username = fields.get("username", "")
        if not self.gate.form_allowed(request, fields.get("csrf"), None):
            return self._form(request, FORGED_MESSAGE, target, 403, username)
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
