"""Pages as HTML: the one Jinja2 environment (templates and assets ship in the package), the
headers every console answer carries, and error pages.

Every page is rendered on the server; the little JavaScript there is (`static/ui.js`: copy buttons)
is a file of ours, and the Content-Security-Policy says so: nothing loads from another host and no
inline script runs."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

HERE = Path(__file__).parent
STATIC = HERE / "static"

#: Every console answer: our own assets only, never framed, no referrer to another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def human_size(size: int | None) -> str:
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # not reached


def timestamp(seconds: float | None) -> str:
    """An epoch time as ISO 8601 in UTC (what the pages show and tests read)."""
    if seconds is None:
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["size"] = human_size
    env.filters["timestamp"] = timestamp
    return env


ENVIRONMENT = _environment()


def page(request: Request, template: str, status: int = 200, **values: Any) -> Response:
    """`template` rendered with `values` and what every page shows (the viewer, the CSRF token),
    which `registry.ui.pages` put in the request's state."""
    state = request.scope.get("cargobay.ui", {})
    html = ENVIRONMENT.get_template(template).render(request=request, **state, **values)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    return page(request, "error.html", status=status, title=title, message=message)
