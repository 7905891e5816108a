"""`GET /v2/<name>/tags/list` with `n`/`last` pagination."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..context import context
from .base import json_response, paginate, repository, run


async def list_tags(request: Request) -> Response:
    ctx = context(request)
    repo = repository(request)
    tags = await run(repo.tags.list)
    page, link = paginate(tags, request, ctx.settings.limits.max_page_size, f"/v2/{repo.name}/tags/list")
    return json_response({"name": repo.name, "tags": page}, {"Link": link} if link else None)
