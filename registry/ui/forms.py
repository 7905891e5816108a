"""The console's request plumbing: the viewer and CSRF token every page renders with, errors as
HTML pages instead of the API's JSON, form bodies, and redirects that stay inside `/ui/`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ocispec.errors import ErrorCode, OCIValidationError
from storage import StorageError

from ..context import context
from ..errors import RegistryError, to_registry_error
from ..handlers.base import FormInvalid, read_form
from .render import SECURITY_HEADERS, error_page
from .session import SESSION_COOKIE, Expired, clear_cookie, remember_csrf, secure_cookies
from .viewer import Gate, Viewer

log = logging.getLogger("cargobay.ui")
#: A console form is a few fields; anything longer is not one of ours.
MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 20
STATE_KEY = "cargobay.ui"
_GATE_KEY = "cargobay.ui.gate"

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
    """A console form's fields (first values); 413/400 RegistryError for what is not one of ours."""
    try:
        return await read_form(request, MAX_FORM_BYTES, MAX_FORM_FIELDS)
    except FormInvalid as exc:
        status = 413 if "large" in str(exc) else 400
        raise RegistryError(ErrorCode.UNSUPPORTED, f"not a form of this console: {exc}", status=status) from None


def console_page(gate: Gate, handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """`handler` as a route: it gets the request's viewer; an expired session, and a visitor who
    could see nothing without logging in, go to the login page; errors become HTML pages with the
    API's status (a storage outage is 503), and anything unexpected a plain 500 page with its
    traceback in the log only; the CSRF cookie is set on the way out."""
    async def endpoint(request: Request) -> Response:
        request.scope[_GATE_KEY] = gate
        try:
            viewer = await gate.viewer(request)
            if isinstance(viewer, Expired):
                return login_redirect(request, expired=True)
            if viewer.must_log_in:
                return login_redirect(request, expired=False)
            request.scope[STATE_KEY] = {"viewer": viewer, "csrf": gate.form_token(request, viewer.session)}
            response = await handler(request, viewer)
        except (RegistryError, StorageError, OCIValidationError) as exc:
            response = failure_page(request, to_registry_error(exc, request.path_params))
        except Exception:
            log.exception("console page %s failed", request.url.path)
            response = failure_page(request, RegistryError(ErrorCode.UNAVAILABLE, "internal error", status=500))
        remember_csrf(request, response, secure(request))
        return response

    endpoint.__name__ = getattr(handler, "__name__", "console_page")
    return endpoint


def gate_of(request: Request) -> Gate:
    """The gate of the page being answered (for the checks of a form it receives)."""
    gate: Gate = request.scope[_GATE_KEY]
    return gate


def failure_page(request: Request, error: RegistryError) -> Response:
    return error_page(request, error.status, _title(error.status), error.message)


def _title(status: int) -> str:
    return {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Not possible here",
            413: "Too large", 429: "Too many attempts"}.get(status, "Unavailable" if status >= 500 else "Error")


def not_found(what: str) -> RegistryError:
    """The same answer for what does not exist and what the viewer may not see."""
    return RegistryError(ErrorCode.NAME_UNKNOWN, f"{what} was not found (or you may not see it)", status=404)


def forged() -> RegistryError:
    return RegistryError(ErrorCode.DENIED, "this form has expired or did not come from this console: open the page "
                         "again and retry", status=403)


def repository_url(name: str, suffix: str = "") -> str:
    return "/ui/r/" + quote(name + suffix, safe="/:@")
