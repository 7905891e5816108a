"""Deleting a tag or a manifest from the console: a confirmation page (GET), then the form
(POST) that does it exactly as the API's DELETE does (`registry.handlers.manifests.remove`:
immutable tags, events, the audit trail), after the viewer's right to delete and the form's
origin and CSRF token were checked."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ocispec.errors import ErrorCode
from storage import Repository, StorageError

from ..errors import RegistryError
from ..handlers import manifests as manifest_api
from ..handlers.base import run
from .forms import forged, form, gate_of, not_found, redirect, repository_url
from .render import page
from .target import Target
from .viewer import Viewer


async def delete(request: Request, viewer: Viewer, repo: Repository, target: Target) -> Response:
    if not viewer.may_delete(repo.name):
        why = "deletes are disabled on this registry" if not viewer.deletes_enabled else \
            f"you may not delete in {repo.name}"
        raise RegistryError(ErrorCode.DENIED, why, status=403)
    if request.method == "POST":  # the one page that changes something
        fields = await form(request)
        if not gate_of(request).form_allowed(request, fields.get("csrf"), viewer.session):
            raise forged()
        await manifest_api.remove(request, repo, target.tag, target.digest)
        what = target.tag if target.tag is not None else str(target.digest)
        return redirect(repository_url(repo.name) + "?" + urlencode({"deleted": what}))
    if not await run(_exists, repo, target):
        raise not_found(f"image {repo.name}{target.reference}")
    return page(request, "confirm_delete.html", title=f"Delete {repo.name}{target.reference}", target=target,
                repository_url=repository_url)


def _exists(repo: Repository, target: Target) -> bool:
    try:
        if target.digest is not None:
            return repo.manifests.exists(target.digest)
        repo.tags.resolve(target.tag or "")
        return True
    except StorageError:
        return False
