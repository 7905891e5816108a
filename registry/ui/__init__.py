"""The web console at `/ui/` (docs/ui.md): browse repositories, tags and images, look at an image's
platforms, layers, config and referrers, see the pull-through upstreams, quotas and last lifecycle
runs, and delete where the rules allow. Server-rendered (Jinja2) with a little JavaScript of its
own; every asset ships in the package.

Modules: `render` (templates, headers, error pages), `session` (the signed session and CSRF
cookies), `viewer` (who is looking and what they may do), `forms` (the request plumbing every page
shares), `browse` (the lists), `image` (an image's details), `status` (the operations page's
figures), `pages` (the page handlers), `account` (login and logout, with auth on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..proxy import PullThrough
from ..settings import Settings
from .forms import console_page, not_found, redirect
from .pages import repositories, repository_or_image
from .render import STATIC
from .status import operations
from .viewer import Gate, Viewer

if TYPE_CHECKING:  # the auth package loads only when auth is on
    from ..auth.service import AuthService

__all__ = ["console_routes"]


def console_routes(settings: Settings, service: AuthService | None, proxy: PullThrough | None) -> list[BaseRoute]:
    """The console's routes below `/ui` (none unless `ui.enabled`)."""
    if not settings.ui.enabled:
        return []
    gate = Gate(settings, service, lambda name: proxy is not None and proxy.upstream_of(name) is not None)

    async def to_console(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=308)

    async def no_login(request: Request) -> Response:
        return redirect("/ui/")

    routes: list[BaseRoute] = [
        Route("/ui", to_console, methods=["GET", "HEAD"]),
        Route("/ui/", console_page(gate, repositories), methods=["GET", "HEAD"]),
        Route("/ui/r/{path:path}", console_page(gate, repository_or_image), methods=["GET", "HEAD", "POST"]),
        Route("/ui/operations", console_page(gate, operations), methods=["GET", "HEAD"]),
        Mount("/ui/static", app=StaticFiles(directory=STATIC), name="ui-static"),
    ]
    if service is not None:
        from .account import Account

        account = Account(gate, service)
        routes += [Route("/ui/login", account.login, methods=["GET", "POST"]),
                   Route("/ui/logout", account.logout, methods=["POST"])]
    else:
        routes += [Route("/ui/login", no_login, methods=["GET"])]
    # Last: anything else below /ui is the console's own 404 page, not the API's JSON.
    routes.append(Route("/ui/{rest:path}", console_page(gate, nothing_here), methods=["GET", "HEAD", "POST"]))
    return routes


async def nothing_here(request: Request, viewer: Viewer) -> Response:
    raise not_found("this page")
