"""The console's request plumbing: the viewer and CSRF token every page renders with, errors as
HTML pages instead of the API's JSON, form bodies, and redirects that stay inside `/ui/`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ocispec.errors import ErrorCode, OCIValidationError
from storage import StorageError

from ..context import context
from ..errors import RegistryError, to_registry_error
from .render import SECURITY_HEADERS, error_page
from .session import SESSION_COOKIE, Expired, clear_cookie, csrf_token, remember_csrf, secure_cookies
from .viewer import Gate, Viewer

log = logging.getLogger("cargobay.ui")
#: A console form is a few fields; anything longer is not one of ours.
MAX_FORM_BYTES = 16 * 1024
STATE_KEY = "cargobay.ui"

PageHandler = Callable[[Request, Viewer], Awaitable[Response]]


def local_target(target: str | None) -> str:
    """Where to go after a login: a console path, never another site (`//evil`, `https://…`)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def login_redirect(request: Request, expired: bool) -> Response:
    query = {"next": request.url.path + (f"?{request.url.query}" if request.url.query else "")}
    if expired:
        query["expired"] = "1"
    response = redirect("/ui/login?" + urlencode(query))
    if expired:
        clear_cookie(response, SESSION_COOKIE, secure(request))
    return response


def secure(request: Request) -> bool:
    return secure_cookies(request, context(request).settings.http.public_url)


async def form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (what the console's forms send), first values."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise RegistryError(ErrorCode.SIZE_INVALID, "form too large", status=413)
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    except ValueError:  # more fields than any of our forms has
        raise RegistryError(ErrorCode.UNSUPPORTED, "not a form of this console", status=400) from None
    return {key: values[0] for key, values in fields.items()}


def console_page(gate: Gate, handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """`handler` as a route: it gets the request's viewer; an expired session, and a visitor who
    could see nothing without logging in, go to the login page; errors become HTML pages with the
    API's status (a storage outage is 503, never a traceback); the CSRF cookie is set on the way out."""
    async def endpoint(request: Request) -> Response:
        viewer = await gate.viewer(request)
        if isinstance(viewer, Expired):
            return login_redirect(request, expired=True)
        if viewer.must_log_in:
            return login_redirect(request, expired=False)
        request.scope[STATE_KEY] = {"viewer": viewer, "csrf": csrf_token(request)}
        try:
            response = await handler(request, viewer)
        except (RegistryError, StorageError, OCIValidationError) as exc:
            error = to_registry_error(exc, request.path_params)
            response = error_page(request, error.status, _title(error.status), error.message)
        remember_csrf(request, response, secure(request))
        return response

    endpoint.__name__ = getattr(handler, "__name__", "console_page")
    return endpoint


def _title(status: int) -> str:
    return {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Not possible here",
            413: "Too large", 429: "Too many attempts"}.get(status, "Unavailable" if status >= 500 else "Error")


def not_found(what: str) -> RegistryError:
    """The same answer for what does not exist and what the viewer may not see."""
    return RegistryError(ErrorCode.NAME_UNKNOWN, f"{what} was not found (or you may not see it)", status=404)


def repository_url(name: str, suffix: str = "") -> str:
    return "/ui/r/" + quote(name + suffix, safe="/:@")
