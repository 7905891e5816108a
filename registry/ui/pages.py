"""The console's pages: the repositories list, a repository, an image, a delete's confirmation and
the operations page. Each checks what the viewer may see first (a repository they may not pull
is answered exactly like one that does not exist), then reads storage in the thread pool."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ocispec.digest import Digest
from ocispec.errors import ErrorCode, OCIValidationError
from ocispec.manifest import parse_manifest
from ocispec.reference import is_tag
from storage import Repository, Storage, StorageError

from ..context import context
from ..errors import RegistryError
from ..handlers import manifests as manifest_api
from ..handlers.base import run
from ..lifecycle import quota
from . import browse, status
from .forms import form, not_found, redirect, repository_url
from .image import attestation_subject, image_details
from .render import page
from .session import csrf_valid
from .viewer import Viewer

DELETE_SUFFIX = "/delete"


@dataclass(frozen=True)
class Target:
    """What `/ui/r/…` names: a repository, or an image in it by tag or digest; maybe its delete."""

    name: str
    tag: str | None = None
    digest: Digest | None = None
    delete: bool = False

    @property
    def reference(self) -> str:
        return f"@{self.digest}" if self.digest is not None else f":{self.tag}" if self.tag else ""

    @classmethod
    def parse(cls, path: str) -> Target:
        delete = path.endswith(DELETE_SUFFIX)
        if delete:
            path = path[: -len(DELETE_SUFFIX)]
        name, at, digest = path.partition("@")
        if at:
            try:
                return cls(name, digest=Digest.parse(digest), delete=delete)
            except OCIValidationError:
                raise not_found(f"image {path}") from None
        head, slash, last = name.rpartition("/")
        if ":" in last:
            last, _, tag = last.partition(":")
            if not is_tag(tag):
                raise not_found(f"image {path}")
            return cls(head + slash + last, tag=tag, delete=delete)
        return cls(name, delete=delete)


def page_size(request: Request) -> int:
    settings = context(request).settings
    try:
        wanted = int(request.query_params.get("n", settings.ui.page_size))
    except ValueError:
        wanted = settings.ui.page_size
    return max(1, min(wanted, settings.limits.max_page_size))


def visible_repository(storage: Storage, viewer: Viewer, name: str) -> Repository:
    """The repository if it exists and the viewer may pull it; else the same 404 for both."""
    try:
        repo = storage.repository(name)
    except StorageError:
        raise not_found(f"repository {name}") from None
    if not viewer.may_pull(repo.name) or not repo.exists():
        raise not_found(f"repository {name}")
    return repo


async def repositories(request: Request, viewer: Viewer) -> Response:
    ctx = context(request)
    query = request.query_params.get("q", "").strip().lower()
    after = request.query_params.get("after") or None
    limit = page_size(request)
    names, more = await run(browse.visible_repositories, ctx.storage, viewer.may_pull, query, after, limit)
    cached = ctx.proxy.upstream_of if ctx.proxy is not None else (lambda name: None)
    rows = [await run(browse.repository_row, ctx.storage.repository(name), cached(name) is not None)
            for name in names]
    next_url = "/ui/?" + urlencode({"q": query, "after": names[-1], "n": limit}) if more and names else None
    return page(request, "repositories.html", title="Repositories", rows=rows, query=query, next_url=next_url,
                repository_url=repository_url)


async def repository_or_image(request: Request, viewer: Viewer) -> Response:
    target = Target.parse(request.path_params["path"])
    repo = await run(visible_repository, context(request).storage, viewer, target.name)
    if target.delete:
        return await delete(request, viewer, repo, target)
    if request.method == "POST":
        raise RegistryError(ErrorCode.UNSUPPORTED, "nothing here takes a form", status=405)
    if target.tag is None and target.digest is None:
        return await repository(request, viewer, repo)
    return await image(request, viewer, repo, target)


async def repository(request: Request, viewer: Viewer, repo: Repository) -> Response:
    sort = browse.BY_NAME if request.query_params.get("sort") == browse.BY_NAME else browse.NEWEST
    after = request.query_params.get("after") or None
    try:
        after_time = float(request.query_params["at"]) if "at" in request.query_params else None
    except ValueError:
        after_time = None
    limit = page_size(request)
    tags = await run(browse.tag_page, repo, sort, after, after_time, limit)
    next_url = None
    if tags.more and tags.rows:
        last = tags.rows[-1]
        query = {"sort": sort, "after": last.tag, "n": str(limit)}
        if sort == browse.NEWEST:
            query["at"] = repr(last.pushed)
        next_url = repository_url(repo.name) + "?" + urlencode(query)
    ctx = context(request)
    example = tags.rows[0].tag if tags.rows else "latest"
    return page(request, "repository.html", title=repo.name, name=repo.name, tags=tags, sort=sort,
                next_url=next_url, commands=pull_commands(request, repo.name, example),
                may_delete=viewer.may_delete(repo.name), deleted=request.query_params.get("deleted"),
                cached=ctx.proxy is not None and ctx.proxy.upstream_of(repo.name) is not None,
                repository_url=repository_url)


def pull_commands(request: Request, name: str, tag: str) -> list[tuple[str, str]]:
    """(tool, command) pairs that pull `name:tag` from this registry as clients reach it: at
    `http.public_url` when set, else where this page was asked from; plain HTTP says so."""
    public = context(request).settings.http.public_url
    scheme, _, host = public.rstrip("/").partition("://") if public else (request.url.scheme, "", request.url.netloc)
    plain_http = scheme == "http"
    ref = f"{host}/{name}:{tag}"
    return [("docker", f"docker pull {ref}"),
            ("podman", f"podman pull {'--tls-verify=false ' if plain_http else ''}{ref}"),
            ("nerdctl", f"nerdctl pull {'--insecure-registry ' if plain_http else ''}{ref}"),
            ("ctr", f"ctr image pull {'--plain-http ' if plain_http else ''}{ref}"),
            ("puller", f"puller fetch {ref}")]


async def image(request: Request, viewer: Viewer, repo: Repository, target: Target) -> Response:
    def load() -> object:
        digest = target.digest if target.digest is not None else repo.tags.resolve(target.tag or "")
        stored = repo.manifests.get(digest)
        manifest = parse_manifest(stored.raw, stored.media_type, max_size=None, strict=False)
        return image_details(repo, digest, manifest, stored.raw)

    details = await run(load)
    return page(request, "image.html", title=f"{repo.name}{target.reference}", image=details, target=target,
                may_delete=viewer.may_delete(repo.name), repository_url=repository_url,
                attestation_subject=attestation_subject)


async def delete(request: Request, viewer: Viewer, repo: Repository, target: Target) -> Response:
    """GET: what would go, and a form to confirm it; POST (with the CSRF token): delete it, as the
    API's DELETE would (immutable tags, events), then back to the repository."""
    if target.tag is None and target.digest is None:
        raise not_found(f"image {repo.name}")
    if not viewer.may_delete(repo.name):
        why = "deletes are disabled on this registry" if not viewer.deletes_enabled else \
            f"you may not delete in {repo.name}"
        raise RegistryError(ErrorCode.DENIED, why, status=403)
    if request.method == "POST":  # the one page that changes something
        fields = await form(request)
        if not csrf_valid(request, fields.get("csrf")):
            raise RegistryError(ErrorCode.DENIED, "this form has expired or did not come from this console: "
                                "open the page again and retry", status=403)
        await manifest_api.remove(request, repo, target.tag, target.digest)
        what = target.tag if target.tag is not None else str(target.digest)
        return redirect(repository_url(repo.name) + "?" + urlencode({"deleted": what}))
    exists = await run(_exists, repo, target)
    if not exists:
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


async def operations(request: Request, viewer: Viewer) -> Response:
    if not viewer.catalog:
        raise RegistryError(ErrorCode.DENIED, "the operations page needs the catalog right", status=403)
    ctx = context(request)
    return page(request, "operations.html", title="Operations", upstreams=status.upstreams(ctx.proxy),
                quotas=await run(status.quotas, quota.of(request)), jobs=await run(status.jobs, ctx.storage))
