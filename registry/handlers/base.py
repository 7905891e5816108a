"""Shared pieces of every handler: path parameters, thread-pool calls, body streaming, headers."""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ocispec.digest import Digest
from ocispec.errors import ErrorCode
from storage import Repository

from ..context import context
from ..errors import BodyCutShort, ClientHungUp, RegistryBaseError, RegistryError
from ..headers import API_VERSION_HEADER as API_VERSION_HEADER  # re-exported: handlers take it from here

T = TypeVar("T")

# Storage calls run here. The loop's own executor hand-off is measurably cheaper per call than
# anyio.to_thread, which matters for the many small calls of manifest and upload requests.
_STORAGE_POOL = ThreadPoolExecutor(max_workers=40, thread_name_prefix="storage")


async def run(fn: Callable[..., T], *args: Any) -> T:
    """Run synchronous storage code in the thread pool, in the caller's context (so what it logs
    carries the request's id: registry.requestinfo.CURRENT)."""
    context_run = contextvars.copy_context().run
    return await asyncio.get_running_loop().run_in_executor(_STORAGE_POOL, context_run, fn, *args)


async def run_small(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a few small metadata reads: inline when the driver declares them non-blocking
    (`DriverCapabilities.fast_small_reads`, the local disk), else in the thread pool. Inline saves
    the thread hand-off and its interpreter-lock ping-pong, which dominates a manifest HEAD/GET
    otherwise. Nothing else of storage ever runs on the event loop."""
    if context(request).storage.capabilities.fast_small_reads:
        return fn(*args)
    return await run(fn, *args)


async def listing_page(request: Request, from_index: Callable[[str | None, int], tuple[list[str], bool]],
                       from_tree: Callable[[], list[str]], last: str | None, limit: int) -> tuple[list[str], bool]:
    """Up to `limit` names after `last` and whether more follow: from the listing index, like
    `run_small` (a page is one listing: a few small directories on disk), once it is known built;
    from the whole sorted list the tree gives (`from_tree`) while it is being built for the first
    time (`Storage.listing_available`). Both give the same page."""
    storage = context(request).storage
    if storage.listing_known_ready or await run(storage.listing_available):
        return await run_small(request, from_index, last, limit)
    return await run(_tree_page, from_tree, last, limit)


def _tree_page(from_tree: Callable[[], list[str]], last: str | None, limit: int) -> tuple[list[str], bool]:
    after = [name for name in from_tree() if not last or name > last]
    return after[:limit], len(after) > limit


def repository(request: Request) -> Repository:
    """The repository named in the path (validated: NAME_INVALID otherwise)."""
    return context(request).storage.repository(request.path_params["name"])


def path_digest(request: Request, param: str = "digest") -> Digest:
    return Digest.parse(request.path_params[param])


def query_digest(request: Request) -> Digest:
    text = request.query_params.get("digest")
    if not text:
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the digest query parameter is required")
    return Digest.parse(text)


class FormInvalid(RegistryBaseError, ValueError):
    """A form body that is too large, has too many fields or is not UTF-8 (the message says which)."""


async def read_form(request: Request, max_bytes: int, max_fields: int = 50) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body, each field's first value; FormInvalid when it
    is larger than `max_bytes`, has more than `max_fields` fields or is not UTF-8."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise FormInvalid("request too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields)
    except UnicodeDecodeError:
        raise FormInvalid("the form is not UTF-8") from None
    except ValueError:
        raise FormInvalid("too many form fields") from None
    return {key: values[0] for key, values in fields.items()}


def json_response(obj: object, headers: dict[str, str] | None = None, media_type: str = "application/json") -> Response:
    return Response(json.dumps(obj).encode(), headers={**API_VERSION_HEADER, **(headers or {})}, media_type=media_type)


async def version_check(request: Request) -> Response:
    """`GET /v2/`: the API is here (authentication, when on, has already been checked)."""
    return json_response({})


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers={**API_VERSION_HEADER, **(headers or {}), "Content-Length": "0"})


async def stream_body(request: Request, write: Callable[[bytes], None], buffer_size: int,
                      limit: int | None = None) -> int:
    """Feed the request body to `write` (run in the thread pool) in batches of about `buffer_size`.

    Batches are lists of the received chunks, not joined buffers: joining would copy every byte
    once more on the event loop. The next batch is received while the previous one is written,
    so network and disk overlap. Returns the number of bytes. `limit` caps the body (413 beyond).
    A body that stops short (the client hung up: ClientHungUp; or it ended before its
    Content-Length: BodyCutShort) still has what arrived written before the error is raised, so
    an upload keeps those bytes and the client can resume from the Range it is told.
    """
    pending: asyncio.Future[None] | None = None
    batch: list[bytes] = []
    batched = 0
    total = 0

    def write_all(chunks: list[bytes]) -> None:
        for chunk in chunks:
            write(chunk)

    async def flush(chunks: list[bytes]) -> None:
        nonlocal pending
        if pending is not None:
            await pending
        pending = asyncio.ensure_future(run(write_all, chunks))

    stopped: Exception | None = None  # the body stopped short: keep what came, then say so
    try:
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                total += len(chunk)
                if limit is not None and total > limit:
                    raise RegistryError(ErrorCode.SIZE_INVALID, f"body larger than {limit} bytes", status=413)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= buffer_size:
                    await flush(batch)
                    batch, batched = [], 0
        except ClientDisconnect:
            stopped = ClientHungUp(total)
        except BodyCutShort as exc:
            stopped = exc
        if batch:
            await flush(batch)
        if pending is not None:
            await pending
            pending = None
    finally:
        if pending is not None:  # failing part-way: let the write finish before the caller cleans up
            await asyncio.gather(pending, return_exceptions=True)
    if stopped is not None:
        raise stopped
    return total


async def read_small_body(request: Request, limit: int) -> bytes:
    """The whole body of a request that holds a document (a manifest of at most `limit` bytes),
    received on the event loop: no thread hand-off, as there is nothing to write. 413 beyond
    `limit`; ClientHungUp or BodyCutShort when it stops short, as `stream_body` says."""
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise RegistryError(ErrorCode.SIZE_INVALID, f"body larger than {limit} bytes", status=413)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientHungUp(total) from None
    return b"".join(chunks)


def paginate(items: list[str], request: Request, max_page: int, base_path: str) -> tuple[list[str], str | None]:
    """Apply `n` and `last` to a sorted list; returns the page and the `Link` header (or None)."""
    page_size, last = page_request(request, max_page)
    if last:
        items = [item for item in items if item > last]
    page = items[:page_size]
    return page, next_link(base_path, page_size, page, len(items) > page_size)


def page_request(request: Request, max_page: int) -> tuple[int, str | None]:
    """The page size (`n`, at most `max_page`) and `last` (None when absent or empty) a listing
    request asks for; PAGINATION_NUMBER_INVALID for an `n` that is no count."""
    n_text = request.query_params.get("n")
    last = request.query_params.get("last") or None
    if n_text is None or n_text == "":
        return max_page, last
    try:
        n = int(n_text)
    except ValueError:
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, f"invalid n {n_text[:20]!r}") from None
    if n < 0:
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, f"invalid n {n}")
    return min(n, max_page), last


def next_link(base_path: str, page_size: int, page: list[str], more: bool) -> str | None:
    """The `Link` header to the page after `page` when `more` follow (None otherwise)."""
    if not more or not page:
        return None
    return f'<{base_path}?n={page_size}&last={quote(page[-1], safe="")}>; rel="next"'
