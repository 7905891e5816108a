"""GET, HEAD and DELETE of blobs, with byte ranges and optional redirects to the storage backend."""

from __future__ import annotations

import asyncio
import re
from typing import BinaryIO

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ocispec.digest import Digest
from ocispec.errors import ErrorCode
from storage import Repository

from ..context import context
from ..errors import RegistryError
from ..events import Event
from ..server import SENDFILE
from .base import API_VERSION_HEADER, empty, path_digest, repository, run, run_small

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range, None to send everything.

    As RFC 9110 says: a header that is not a valid single byte range (another unit, `5-2`,
    several ranges) is ignored and the whole blob sent; a valid range that lies beyond the blob
    raises RegistryError 416.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if not match:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return _unsatisfiable(size)
        return max(size - length, 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # `5-2` is not a valid range: ignored
    if start >= size:
        return _unsatisfiable(size)
    return start, min(int(last) if last else size - 1, size - 1)


def _unsatisfiable(size: int) -> tuple[int, int]:
    raise RegistryError(ErrorCode.RANGE_INVALID, "requested range not satisfiable", status=416,
                        headers={"Content-Range": f"bytes */{size}"})


class StreamResponse(Response):
    """Sends `length` bytes of an already opened stream: with sendfile(2) when the stream is an OS
    file (`is_file`: the driver declares `DriverCapabilities.sendfile`) and the server offers it,
    else read in large chunks in the thread pool (Starlette's 64 KiB file chunks are several times
    slower under uvicorn)."""

    def __init__(self, stream: BinaryIO, length: int, chunk_size: int, status_code: int,
                 headers: dict[str, str], is_file: bool = False) -> None:
        super().__init__(status_code=status_code, headers=headers)
        self.stream = stream
        self.length = length
        self.chunk_size = chunk_size
        self.is_file = is_file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Files go by sendfile; other streams (S3) read one piece ahead while the last is sent.
        # A client that goes away stops the reading (the server would otherwise silently drop what
        # we keep sending).
        gone = asyncio.Event()

        async def watch_for_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        send_file = scope.get("extensions", {}).get(SENDFILE) if self.is_file else None
        if send_file is not None:
            try:
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                await send_file(self.stream.fileno(), self.stream.tell(), self.length)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await run(self.stream.close)
            return
        watcher = asyncio.ensure_future(watch_for_disconnect())
        reading: asyncio.Future[bytes] | None = None
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            remaining = self.length
            reading = asyncio.ensure_future(run(self.stream.read, min(self.chunk_size, remaining)))
            while reading is not None and not gone.is_set():
                chunk = await reading
                reading = None
                if not chunk:
                    return  # storage shrank under us: end the body short, the client sees it
                remaining -= len(chunk)
                if remaining > 0:
                    # The next piece is read (from the network: this is not a file) while this one
                    # is sent, so the backend and the client are never waited for in turn.
                    reading = asyncio.ensure_future(run(self.stream.read, min(self.chunk_size, remaining)))
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        finally:
            watcher.cancel()
            if reading is not None:  # a read in the pool cannot be cancelled: let it end first
                await asyncio.gather(reading, return_exceptions=True)
            await run(self.stream.close)


def blob_headers(digest: Digest) -> dict[str, str]:
    """What every answer with a blob's bytes carries (its length and range aside)."""
    return {
        **API_VERSION_HEADER,
        "Docker-Content-Digest": str(digest),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
    }


async def get_blob(request: Request) -> Response:
    ctx = context(request)
    repo = repository(request)
    digest = path_digest(request)
    if request.method == "GET" and not request.headers.get("range") and not ctx.storage.capabilities.presigned_urls:
        return await _whole_blob(request, repo, digest)
    # A HEAD looks at the link itself (push clients ask it before uploading); a download may
    # believe a link this server saw lately (storage.recent_links), as its reads below do.
    info = await run_small(request, repo.blobs.stat if request.method == "HEAD" else repo.blobs.stat_served, digest)
    headers = blob_headers(digest)
    byte_range = parse_range(request.headers.get("range"), info.size)
    start, end = byte_range if byte_range else (0, info.size - 1)
    length = end - start + 1
    headers["Content-Length"] = str(length)
    status = 200
    if byte_range is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    # Every read below goes through the repository's view, which checks its link.
    url = await run_small(request, repo.blobs.url_for, digest)
    if url is not None:
        # Credentials stay with us: the client fetches the bytes from storage with a signed URL.
        return Response(status_code=307, headers={**API_VERSION_HEADER, "Location": url, "Content-Length": "0",
                                                  "Docker-Content-Digest": str(digest)})
    if length == 0:
        return Response(b"", status_code=status, headers=headers)
    stream = await run(repo.blobs.open, digest, start)
    return StreamResponse(stream, length, ctx.settings.limits.download_chunk_bytes, status, headers,
                          is_file=ctx.storage.capabilities.sendfile)


async def _whole_blob(request: Request, repo: Repository, digest: Digest) -> Response:
    """A GET of the whole blob: its size comes with its bytes (one storage call after the link
    check, which the server's memory of links may answer: on S3 a pull costs a GET per blob)."""
    stream, size = await run(repo.blobs.open_sized, digest)
    headers = blob_headers(digest)
    headers["Content-Length"] = str(size)
    if size == 0:
        await run(stream.close)
        return Response(b"", status_code=200, headers=headers)
    return StreamResponse(stream, size, context(request).settings.limits.download_chunk_bytes, 200, headers,
                          is_file=context(request).storage.capabilities.sendfile)


async def delete_blob(request: Request) -> Response:
    """Only reached with storage.delete.enabled (registry.routes refuses it otherwise)."""
    repo = repository(request)
    digest = path_digest(request)
    await run(repo.blobs.unlink, digest)
    await context(request).events.emit(request, Event("blob.delete", repository=repo.name, digest=str(digest)))
    return empty(202, {"Docker-Content-Digest": str(digest)})
