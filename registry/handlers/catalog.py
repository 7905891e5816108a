"""`GET /v2/_catalog` with `n`/`last` pagination: a page read from storage's listing index (one
listing, whatever the number of repositories)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..context import context
from .base import json_response, listing_page, next_link, page_request


async def catalog(request: Request) -> Response:
    ctx = context(request)
    page_size, last = page_request(request, ctx.settings.limits.max_page_size)
    names, more = await listing_page(request, ctx.storage.repositories_page, ctx.storage.repositories, last,
                                     page_size)
    link = next_link("/v2/_catalog", page_size, names, more)
    return json_response({"repositories": names}, {"Link": link} if link else None)
