"""Blob uploads: POST (start, monolithic, mount), PATCH (chunks), PUT (finish), GET (status),
DELETE (cancel). Every piece of state is in storage, so any replica can serve any step."""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import Response

from ocispec.digest import Digest
from ocispec.errors import ErrorCode, OCIValidationError
from ocispec.reference import validate_repository_name
from storage import DigestInvalid, Repository, RepositoryUploads, SizeInvalid, UploadSession

from ..access import PULL, Access
from ..context import context
from ..errors import RegistryError
from ..events import Event
from ..headers import blob_url, upload_headers
from ..lifecycle import quota
from .base import empty, query_digest, repository, run, run_small, stream_body

log = logging.getLogger("cargobay.registry")
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(\d+|\*))?$")


async def _created(request: Request, name: str, digest: Digest, size: int) -> Response:
    """The answer to a blob now in the repository (uploaded or mounted), told to the listeners."""
    await context(request).events.emit(request, Event("blob.push", repository=name, digest=str(digest), size=size))
    return empty(201, {"Location": blob_url(name, digest), "Docker-Content-Digest": str(digest)})


def _content_length(request: Request) -> int | None:
    text = request.headers.get("content-length")
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise RegistryError(ErrorCode.SIZE_INVALID, "invalid Content-Length") from None
    if value < 0:
        raise RegistryError(ErrorCode.SIZE_INVALID, "invalid Content-Length")
    return value


async def _receive_into(request: Request, session: UploadSession) -> int:
    """Stream the body into the session and persist it; returns the upload's new size."""
    ctx = context(request)
    try:
        received = await stream_body(request, session.write, ctx.settings.limits.upload_buffer_bytes)
    except BaseException:
        await run(session.close)  # keep what arrived; the client may resume from the Range we report
        raise
    declared = _content_length(request)
    size = await run(session.close)
    if declared is not None and received != declared:
        raise RegistryError(ErrorCode.SIZE_INVALID, f"received {received} bytes, Content-Length said {declared}")
    return size


async def start_upload(request: Request) -> Response:
    ctx = context(request)
    repo = repository(request)
    mount, source = request.query_params.get("mount"), request.query_params.get("from")
    if mount:
        mounted = await _try_mount(request, repo, mount, source)
        if mounted is not None:
            return await _created(request, repo.name, *mounted)
    digest_param = request.query_params.get("digest")
    if digest_param is not None:
        return await _monolithic(request, repo, query_digest(request))
    status = await run(repo.uploads.start)
    headers = upload_headers(repo.name, status.id, 0)
    headers["OCI-Chunk-Min-Length"] = str(ctx.settings.limits.chunk_min_length)
    return empty(202, headers)


async def _try_mount(request: Request, repo: Repository, mount: str,
                     source: str | None) -> tuple[Digest, int] | None:
    """Mount when the source has the blob and the caller may pull it: its digest and size; None
    means "upload instead" (the answer reveals nothing about repositories the caller cannot read)."""
    try:
        digest = Digest.parse(mount)
        source_name = validate_repository_name(source or "")
    except OCIValidationError:
        return None
    ctx = context(request)
    if not await ctx.authorizer.permits(request, Access("repository", source_name, (PULL,))):
        return None
    source_repo = ctx.storage.repository(source_name)
    await quota.before_mount(request, repo, source_repo, digest)
    if not await run(repo.blobs.mount_from, source_repo.blobs, digest):
        return None
    # Its size only for whoever listens to pushes (registry.events): otherwise no stat is owed.
    size = (await run_small(request, repo.blobs.stat, digest)).size if ctx.events.wants("blob.push") else 0
    return digest, size


async def _monolithic(request: Request, repo: Repository, digest: Digest) -> Response:
    return await _created(request, repo.name, digest, await _receive_whole(request, repo, digest))


async def _receive_whole(request: Request, repo: Repository, digest: Digest) -> int:
    """A body that is the whole blob (POST ?digest=, or a PUT with the body on an empty upload):
    streamed straight to its place in the CAS (storage.fill), where it appears only once its
    digest verified; no upload state, no second copy. Returns its size."""
    ctx = context(request)
    fill = await run(repo.blobs.fill, digest)
    try:
        received = await stream_body(request, fill.write, ctx.settings.limits.upload_buffer_bytes)
        declared = _content_length(request)
        if declared is not None and received != declared:
            raise RegistryError(ErrorCode.SIZE_INVALID, f"received {received} bytes, Content-Length said {declared}")
        quotas = quota.of(request)
        if quotas is not None:
            await run(quotas.check, repo.name, digest, received)
        blob = await run(fill.commit)
    finally:
        await run(fill.abort)  # nothing after a commit; else what was written goes
    return blob.size


def _cancel_quietly(uploads: RepositoryUploads, upload_id: str) -> None:
    """Best effort: the request is failing already, and the upload purge removes what is left."""
    try:
        uploads.cancel(upload_id)
    except Exception as exc:
        log.debug("could not cancel upload %s of %s: %s", upload_id, uploads.name, exc)


def _chunk_offset(request: Request) -> int | None:
    """The start offset a PATCH's Content-Range claims, or None for a plain streamed PATCH."""
    header = request.headers.get("content-range")
    if not header:
        return None
    match = _CONTENT_RANGE.match(header.strip())
    if not match:
        raise RegistryError(ErrorCode.RANGE_INVALID, f"invalid Content-Range {header[:60]!r}", status=416)
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise RegistryError(ErrorCode.RANGE_INVALID, f"invalid Content-Range {header[:60]!r}", status=416)
    length = _content_length(request)
    if length is not None and length != end - start + 1:
        raise RegistryError(ErrorCode.RANGE_INVALID, "Content-Range and Content-Length disagree", status=416)
    return start


async def patch_upload(request: Request) -> Response:
    repo = repository(request)
    upload_id = request.path_params["upload_id"]
    offset = _chunk_offset(request)
    session = await run(repo.uploads.open_session, upload_id, offset)  # 416 by the error table
    size = await _receive_into(request, session)
    return empty(202, upload_headers(repo.name, upload_id, size))


async def finish_upload(request: Request) -> Response:
    repo = repository(request)
    upload_id = request.path_params["upload_id"]
    digest = query_digest(request)
    has_body = (_content_length(request) or 0) > 0 or "chunked" in request.headers.get("transfer-encoding", "")
    if has_body:  # (without one, completing it is the first thing that reads the upload: 404 there)
        offset = _chunk_offset(request)
        if not offset and (await run(repo.uploads.status, upload_id)).size == 0:  # 404 before reading the body
            # The blob arrives whole: straight into the CAS, and the upload had nothing to keep.
            try:
                size = await _receive_whole(request, repo, digest)
            except (RegistryError, DigestInvalid, SizeInvalid):
                await run(_cancel_quietly, repo.uploads, upload_id)  # as a completion that failed
                raise
            await run(repo.uploads.discard_empty, upload_id)
            return await _created(request, repo.name, digest, size)
        session = await run(repo.uploads.open_session, upload_id, offset)
        await _receive_into(request, session)
    await quota.before_upload_link(request, repo, upload_id, digest)
    blob = await run(repo.uploads.complete, upload_id, digest)
    return await _created(request, repo.name, digest, blob.size)


async def upload_status(request: Request) -> Response:
    repo = repository(request)
    status = await run(repo.uploads.status, request.path_params["upload_id"])
    return empty(204, upload_headers(repo.name, status.id, status.size))


async def cancel_upload(request: Request) -> Response:
    repo = repository(request)
    await run(repo.uploads.cancel, request.path_params["upload_id"])
    return empty(204)
