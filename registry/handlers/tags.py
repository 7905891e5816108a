"""`GET /v2/<name>/tags/list` with `n`/`last` pagination: a page read from storage's listing index
(one listing, whatever the number of tags)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..context import context
from .base import json_response, listing_page, next_link, page_request, repository


async def list_tags(request: Request) -> Response:
    ctx = context(request)
    repo = repository(request)
    page_size, last = page_request(request, ctx.settings.limits.max_page_size)

    tags, more = await listing_page(request, repo.tags.page, repo.tags.list, last, page_size)
    link = next_link(f"/v2/{repo.name}/tags/list", page_size, tags, more)
    return json_response({"name": repo.name, "tags": tags}, {"Link": link} if link else None)
