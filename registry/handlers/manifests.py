"""PUT, GET, HEAD and DELETE of manifests by tag or digest."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ocispec.digest import Digest
from ocispec.errors import ErrorCode
from ocispec.reference import is_tag, validate_tag
from storage import ManifestRules, PutResult, Repository, StoredManifest, TagUnknown

from ..context import context
from ..errors import RegistryError
from ..events import Event
from ..headers import manifest_url
from ..lifecycle import immutable
from .base import API_VERSION_HEADER, empty, read_small_body, repository, run, run_small


def path_reference(request: Request) -> tuple[str | None, Digest | None]:
    """(tag, None) or (None, digest) from the path; invalid ones are 400s."""
    reference = request.path_params["reference"]
    if ":" in reference:
        return None, Digest.parse(reference)
    if not is_tag(reference):
        raise RegistryError(ErrorCode.TAG_INVALID, f"invalid tag {reference[:200]!r}")
    return reference, None


async def put_manifest(request: Request) -> Response:
    ctx = context(request)
    repo = repository(request)
    tag, reference_digest = path_reference(request)
    extra_tags = tuple(validate_tag(t) for t in request.query_params.getlist("tag"))
    limit = ctx.settings.limits.max_manifest_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RegistryError(ErrorCode.SIZE_INVALID, f"manifest larger than {limit} bytes", status=413)
    body = await read_small_body(request, limit)
    tags = tuple(dict.fromkeys(((tag,) if tag else ()) + extra_tags))  # each once, in the order given
    rules = ManifestRules(allow_sparse_indexes=ctx.settings.validation.manifests.allow_sparse_indexes)
    await immutable.before_tagging(request, repo, tags, body, reference_digest)
    moving = ctx.events.wants("tag.move")
    previous = await run_small(request, _targets, repo, tags) if moving and tags else {}
    result = await run(repo.manifests.put, body, request.headers.get("content-type"), reference_digest, tags,
                       rules)
    if ctx.events.wants("manifest.push") or moving:  # events cost a uuid each: made only when wanted
        await ctx.events.emit(request, *_pushed(repo.name, result, len(body), previous))
    # The digest is the one the client pushed by (its algorithm, e.g. sha512), not always sha256.
    headers = {"Location": manifest_url(repo.name, str(result.digest)), "Docker-Content-Digest": str(result.digest)}
    if result.subject is not None:
        headers["OCI-Subject"] = str(result.subject)
    response = empty(201, headers)
    # distribution-spec (development branch, end-7b): one OCI-Tag header for every tag applied, so a
    # client pushing by digest with `?tag=` knows the registry tagged it (and needs no tag pushes).
    for applied in result.tags:
        response.headers.append("OCI-Tag", applied)
    return response


def _targets(repo: Repository, tags: tuple[str, ...]) -> dict[str, Digest]:
    """What each of `tags` points at now (those that exist): a push that moves one says from where."""
    targets = {}
    for tag in tags:
        try:
            targets[tag] = repo.tags.resolve(tag)
        except TagUnknown:
            continue
    return targets


def _pushed(name: str, result: PutResult, size: int, previous: dict[str, Digest]) -> list[Event]:
    digest = str(result.digest)
    pushes = [Event("manifest.push", repository=name, digest=digest, media_type=result.media_type, size=size, tag=tag)
              for tag in result.tags or ("",)]
    moves = [Event("tag.move", repository=name, tag=tag, previous=str(previous[tag]), digest=digest)
             for tag in result.tags if tag in previous and previous[tag] != result.digest]
    return pushes + moves


async def get_manifest(request: Request) -> Response:
    repo = repository(request)
    tag, digest = path_reference(request)

    def load() -> StoredManifest:
        return repo.manifests.get(digest) if digest is not None else repo.manifests.get_tagged(tag or "")

    return manifest_response(request, await run_small(request, load))


def manifest_response(request: Request, stored: StoredManifest) -> Response:
    """The answer to a GET or HEAD of `stored` (the same headers for both; HEAD without the body)."""
    headers = {
        **API_VERSION_HEADER,
        "Content-Type": stored.media_type,
        "Content-Length": str(stored.size),
        "Docker-Content-Digest": str(stored.digest),
        "ETag": f'"{stored.digest}"',
    }
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    return Response(stored.raw, status_code=200, headers=headers)


async def delete_manifest(request: Request) -> Response:
    """Only reached with storage.delete.enabled (registry.routes refuses it otherwise)."""
    tag, digest = path_reference(request)
    await remove(request, repository(request), tag, digest)
    return empty(202)


async def remove(request: Request, repo: Repository, tag: str | None, digest: Digest | None) -> None:
    """Delete a manifest (`digest`) or a tag, as the API's DELETE does (the web console's too):
    immutable tags refuse it, and it is an event. The caller has checked the access and that
    deletes are enabled."""
    events = context(request).events
    await immutable.before_delete(request, repo, tag, digest)
    if digest is not None:
        await run(repo.manifests.delete, digest)
        await events.emit(request, Event("manifest.delete", repository=repo.name, digest=str(digest)))
    else:
        named = await run_small(request, _targets, repo, (tag or "",)) if events.wants("tag.delete") else {}
        await run(repo.tags.delete, tag or "")
        was = named.get(tag or "")
        await events.emit(request, Event("tag.delete", repository=repo.name, tag=tag or "",
                                         digest=str(was) if was else ""))
