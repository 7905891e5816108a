"""uvicorn's HTTP protocol with one addition: blob bodies sent by `sendfile(2)`.

Handing the file to the kernel saves the two copies a chunked body costs (file → Python → socket),
which on loopback is the difference between trailing Go's Distribution and beating it, and keeps
memory flat however many downloads run. Requests get an ASGI scope extension, SENDFILE: an
awaitable `(fd, offset, count)` that writes `count` bytes of the open file `fd` from `offset` as
the response body, after `http.response.start` and before the final empty `http.response.body`.
Responses fall back to ordinary chunks when the extension is absent (another server, tests).

This is the one module that knows uvicorn's internals (the transport and the request cycle's
expected content length); keep it that way.
"""

from __future__ import annotations

import asyncio
import functools
import os
import select
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SENDFILE = "cargobay.sendfile"
STALL_SECONDS = 120.0  # a client that takes no bytes for this long is dropped


class SendfileHttpToolsProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The request task was only scheduled, not run: its scope (this very dict) still gets this.
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
        extensions[SENDFILE] = functools.partial(_send_file, self, self.cycle)


async def _send_file(protocol: HttpToolsProtocol, cycle: Any, fd: int, offset: int, count: int) -> None:
    transport = protocol.transport
    sock = transport.get_extra_info("socket")
    if sock is None or cycle.disconnected:
        raise ConnectionError("client went away")
    while transport.get_write_buffer_size():  # the status line and headers go first
        if cycle.disconnected:
            raise ConnectionError("client went away")
        await asyncio.sleep(0.001)
    await asyncio.get_running_loop().run_in_executor(None, _sendfile_all, sock.fileno(), fd, offset, count)
    cycle.expected_content_length -= count  # uvicorn counts body bytes it sent itself


def _sendfile_all(out_fd: int, in_fd: int, offset: int, count: int) -> None:
    """All `count` bytes to the (non-blocking) socket, waiting for room in its buffer."""
    poller = select.poll()
    poller.register(out_fd, select.POLLOUT)
    while count > 0:
        try:
            sent = os.sendfile(out_fd, in_fd, offset, count)
        except BlockingIOError:
            if not poller.poll(STALL_SECONDS * 1000):
                raise TimeoutError("client stopped reading") from None
            continue
        if sent == 0:
            raise OSError("file ended before the announced length")
        offset += sent
        count -= sent
