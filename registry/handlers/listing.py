"""The listings: `/v2/`, tags, the catalog and referrers."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from ocispec import mediatypes as mt

from ..context import context
from .base import API_VERSION_HEADER, paginate, path_digest, repository, run


def _json(obj: object, headers: dict[str, str] | None = None, media_type: str = "application/json") -> Response:
    return Response(json.dumps(obj).encode(), headers={**API_VERSION_HEADER, **(headers or {})}, media_type=media_type)


async def version_check(request: Request) -> Response:
    return _json({})


async def list_tags(request: Request) -> Response:
    ctx = context(request)
    repo = repository(request)
    tags = await run(repo.tags.list)
    page, link = paginate(tags, request, ctx.settings.limits.max_page_size, f"/v2/{repo.name}/tags/list")
    return _json({"name": repo.name, "tags": page}, {"Link": link} if link else None)


async def catalog(request: Request) -> Response:
    ctx = context(request)
    names = await run(ctx.storage.repositories)
    page, link = paginate(names, request, ctx.settings.limits.max_page_size, "/v2/_catalog")
    return _json({"repositories": page}, {"Link": link} if link else None)


async def referrers(request: Request) -> Response:
    repo = repository(request)
    subject = path_digest(request)
    artifact_type = request.query_params.get("artifactType") or None
    descriptors = await run(repo.referrers.list, subject, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else None
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    return _json(index, headers, mt.OCI_INDEX)
