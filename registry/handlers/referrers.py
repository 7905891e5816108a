"""`GET /v2/<name>/referrers/<digest>`: an OCI index of the manifests whose subject is that digest."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ocispec import mediatypes as mt

from .base import json_response, path_digest, repository, run


async def referrers(request: Request) -> Response:
    repo = repository(request)
    subject = path_digest(request)
    artifact_type = request.query_params.get("artifactType") or None
    descriptors = await run(repo.referrers.list, subject, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else None
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    return json_response(index, headers, mt.OCI_INDEX)
