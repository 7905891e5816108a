"""The console's browsing pages: the repositories list, a repository's tags, its untagged
manifests, and an image. Each checks what the viewer may see first (a repository they may not
pull is answered exactly like one that does not exist), then reads storage in the thread pool."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from ocispec.digest import Digest
from ocispec.errors import ErrorCode, OCIValidationError
from ocispec.reference import is_tag
from storage import ManifestUnknown, Repository, Storage

from ..context import context
from ..errors import RegistryError
from ..handlers.base import run
from . import browse
from .forms import not_found, repository_url
from .image import ImageDetails, attestation_subject, image_details
from .removal import delete
from .render import page
from .target import NotATarget, Target
from .viewer import Viewer

#: Rows a console page shows at most, whatever `?n=` asks (each row costs reads).
MAX_ROWS = 200


def page_size(request: Request) -> int:
    settings = context(request).settings
    try:
        wanted = int(request.query_params.get("n", settings.ui.page_size))
    except ValueError:
        wanted = settings.ui.page_size
    return max(1, min(wanted, settings.limits.max_page_size, MAX_ROWS))


def visible_repository(storage: Storage, viewer: Viewer, name: str) -> Repository:
    """The repository if it exists and the viewer may pull it; else the same 404 for both."""
    try:
        repo = storage.repository(name)
    except OCIValidationError:
        raise not_found(f"repository {name}") from None
    if not viewer.may_pull(repo.name) or not repo.exists():
        raise not_found(f"repository {name}")
    return repo


async def repositories(request: Request, viewer: Viewer) -> Response:
    ctx = context(request)
    query = request.query_params.get("q", "").strip().lower()
    limit = page_size(request)
    found = await run(browse.visible_repositories, ctx.storage, viewer.may_pull, query,
                      request.query_params.get("after") or None, limit)
    proxy = ctx.proxy

    def read_rows() -> list[browse.RepositoryRow]:  # every row in one trip to the thread pool
        return [browse.repository_row(ctx.storage.repository(name),
                                      proxy is not None and proxy.upstream_of(name) is not None)
                for name in found.rows]

    rows = await run(read_rows)
    next_url = "/ui/?" + urlencode({"q": query, "after": found.next_after, "n": limit}) if found.next_after else None
    return page(request, "repositories.html", title="Repositories", rows=rows, query=query, next_url=next_url,
                repository_url=repository_url)


async def repository_or_image(request: Request, viewer: Viewer) -> Response:
    try:
        target = Target.parse(request.path_params["path"])
    except NotATarget as exc:
        raise not_found(f"image {exc}") from None
    repo = await run(visible_repository, context(request).storage, viewer, target.name)
    if target.delete:
        return await delete(request, viewer, repo, target)
    if request.method == "POST":
        raise RegistryError(ErrorCode.UNSUPPORTED, "nothing here takes a form", status=405)
    if target.is_image:
        return await image(request, viewer, repo, target)
    if request.query_params.get("view") == "untagged":
        return await untagged(request, viewer, repo)
    return await repository(request, viewer, repo)


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
    deleted = request.query_params.get("deleted", "")
    return page(request, "repository.html", title=repo.name, name=repo.name, tags=tags, sort=sort,
                next_url=next_url, commands=pull_commands(request, repo.name, example),
                may_delete=viewer.may_delete(repo.name), deleted=deleted if _is_reference(deleted) else None,
                cached=ctx.proxy is not None and ctx.proxy.upstream_of(repo.name) is not None,
                repository_url=repository_url)


def _is_reference(text: str) -> bool:
    """A tag or a digest (what a delete's flash message may name; anything else is not shown)."""
    if is_tag(text):
        return True
    try:
        Digest.parse(text)
    except OCIValidationError:
        return False
    return True


async def untagged(request: Request, viewer: Viewer, repo: Repository) -> Response:
    after = request.query_params.get("after") or None
    limit = page_size(request)
    rows, more = await run(browse.untagged_page, repo, after, limit)
    next_url = repository_url(repo.name) + "?" + urlencode({"view": "untagged", "after": str(rows[-1][0]),
                                                            "n": limit}) if more and rows else None
    return page(request, "untagged.html", title=f"{repo.name}: untagged manifests", name=repo.name, rows=rows,
                next_url=next_url, may_delete=viewer.may_delete(repo.name), repository_url=repository_url)


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
    def load() -> ImageDetails:
        digest = target.digest if target.digest is not None else repo.tags.resolve(target.tag or "")
        stored = repo.manifests.get(digest)  # one check of the revision link, one read
        manifest = stored.parsed()
        if manifest is None:
            raise ManifestUnknown(f"manifest unknown: {digest}", digest=str(digest))
        return image_details(repo, digest, manifest, stored.raw)

    details = await run(load)
    return page(request, "image.html", title=f"{repo.name}{target.reference}", image=details, target=target,
                may_delete=viewer.may_delete(repo.name), repository_url=repository_url,
                attestation_subject=attestation_subject)
