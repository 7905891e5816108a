"""`GET /v2/_catalog` with `n`/`last` pagination, derived from the storage tree."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..context import context
from .base import json_response, paginate, run


async def catalog(request: Request) -> Response:
    ctx = context(request)
    names = await run(ctx.storage.repositories)
    page, link = paginate(names, request, ctx.settings.limits.max_page_size, "/v2/_catalog")
    return json_response({"repositories": page}, {"Link": link} if link else None)
