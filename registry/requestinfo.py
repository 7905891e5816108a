"""What one HTTP request was: its id, who sent it, what it did and how it ended.

`RequestTracking` is the outermost ASGI middleware: it gives every request a `RequestInfo` (in the
scope, where handlers reach it through `request_info`, and in a context variable, where log records
find it), echoes the request id in `X-Request-ID`, counts the body bytes in and out, and when the
response is done hands the finished record to each `RequestObserver` (the access log, the metrics;
one that also wants to hear of a request as it arrives implements `RequestStarts`). The route
table fills in the route template, repository and action, the authorizer the user; the record is
one mutable object shared by every copy of the scope, so what an inner layer learns the outer one
sees.

The request id is the client's `X-Request-ID` when the connection comes from a trusted proxy
(`http.trusted_proxies`) and the value is sane; otherwise one is made up.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("cargobay.registry")
INFO_KEY = "cargobay.request"
#: scope extension our HTTP protocol (registry.server) sets: the address of the connection's other
#: end, before any X-Forwarded-For rewrite.
PEER = "cargobay.peer"
REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")

#: The request being served, for log records (registry.logs) and events made off the loop.
CURRENT: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("cargobay_request", default=None)


@dataclass(slots=True)
class RequestInfo:
    id: str
    method: str
    path: str
    client: str
    user_agent: str = ""
    host: str = ""
    #: The raw query string (the access log shows it with secret-looking values masked).
    query: str = ""
    started: float = field(default_factory=time.perf_counter)
    #: The route template (`/v2/{name}/manifests/{reference}`), never the raw path; "" if none matched.
    route: str = ""
    repository: str = ""
    #: What the route does to the repository: pull, push or delete ("" for the others).
    action: str = ""
    #: Who, once the authorizer identified them ("" for nobody in particular).
    user: str = ""
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0


def request_info(request: Request) -> RequestInfo:
    """The request's record (one is made if the middleware is not installed, as in unit tests)."""
    info = request.scope.get(INFO_KEY)
    if info is None:
        client = request.client.host if request.client else ""
        info = RequestInfo(new_request_id(), request.method, request.url.path, client)
        request.scope[INFO_KEY] = info
    return info


def new_request_id() -> str:
    return os.urandom(8).hex()


class RequestObserver(Protocol):
    def request_done(self, info: RequestInfo) -> None:
        """Called on the event loop once the response is done (or failed): must be quick."""


@runtime_checkable
class RequestStarts(Protocol):
    """What an observer implements besides `request_done` to hear of requests as they arrive (the
    metrics' uploads in progress); `request_done` follows for every one."""

    def request_started(self, info: RequestInfo) -> None:
        """Called on the event loop before the application sees the request, so only what the
        request line and headers say is known (not yet the route): must be quick."""


class TrustedPeers:
    """`http.trusted_proxies`: `*`, or comma-separated addresses and networks (`10.0.0.0/8`)."""

    def __init__(self, spec: str) -> None:
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        self.everyone = "*" in parts
        self.networks = []
        self.names = set()
        for part in parts:
            try:
                self.networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                self.names.add(part)  # e.g. a unix socket path or a host name uvicorn also takes

    def trusts(self, peer: str) -> bool:
        if self.everyone or peer in self.names:
            return True
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class RequestTracking:
    def __init__(self, app: ASGIApp, observers: Sequence[RequestObserver], trusted: TrustedPeers) -> None:
        self.app = app
        self.observers = tuple(observers)
        self.starting = tuple(observer for observer in self.observers if isinstance(observer, RequestStarts))
        self.trusted = trusted

    def _request_id(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        given = headers.get(REQUEST_ID_HEADER)
        if given is not None and _SANE_ID.fullmatch(given):
            peer = scope.get("extensions", {}).get(PEER)
            if peer is None:  # no protocol of ours below (tests): the client is the peer
                peer = (scope.get("client") or ("",))[0]
            if self.trusted.trusts(peer):
                return given.decode()
        return new_request_id()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        info = RequestInfo(self._request_id(scope, headers), scope["method"], scope["path"],
                           (scope.get("client") or ("",))[0],
                           headers.get(b"user-agent", b"").decode("latin-1")[:256],
                           headers.get(b"host", b"").decode("latin-1")[:256],
                           scope.get("query_string", b"").decode("latin-1"))
        scope[INFO_KEY] = info
        token = CURRENT.set(info)
        echoed = (REQUEST_ID_HEADER, info.id.encode())
        declared = -1  # the response's Content-Length: sendfile and thread-written bodies bypass `send`
        sent = 0

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                info.bytes_in += len(message.get("body", b""))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal declared, sent
            if message["type"] == "http.response.start":
                info.status = message["status"]
                response_headers = list(message.get("headers", ()))
                for name, value in response_headers:
                    if name.lower() == b"content-length":
                        declared = int(value) if value.isdigit() else -1
                response_headers.append(echoed)
                message = {**message, "headers": response_headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        for starting in self.starting:
            try:
                starting.request_started(info)
            except Exception:  # an observer's failure must never become the client's
                log.exception("request observer %s failed", type(starting).__name__)
        try:
            await self.app(scope, counting_receive, tracking_send)
        finally:
            info.seconds = time.perf_counter() - info.started
            if not info.route:  # routes outside the table (the token endpoint): Starlette's match
                route = scope.get("route")
                info.route = getattr(route, "path", "") if route is not None else ""
            if info.status == 0:
                info.status = 500  # the app failed before it answered
            no_body = info.method == "HEAD" or info.status in (204, 304) or info.status < 200
            info.bytes_out = 0 if no_body else max(sent, declared)
            for observer in self.observers:
                try:
                    observer.request_done(info)
                except Exception:  # an observer's failure must never become the client's
                    log.exception("request observer %s failed", type(observer).__name__)
            CURRENT.reset(token)
