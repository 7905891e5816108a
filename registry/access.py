"""The access seam: every route declares what it needs (`repository:<name>:pull` …), and one
`Authorizer` decides. The default lets everything through; the auth package plugs in its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request

PULL, PUSH, DELETE = "pull", "push", "delete"


@dataclass(frozen=True, slots=True)
class Access:
    """One resource scope item, as in the Docker token spec: `type:name:actions`."""

    type: str
    name: str
    actions: tuple[str, ...]

    def scope(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


#: What a route needs, computed from the request (the repository name is a path parameter).
AccessRule = Callable[[Request], list[Access]]


def repository(*actions: str) -> AccessRule:
    def rule(request: Request) -> list[Access]:
        return [Access("repository", request.path_params["name"], actions)]

    return rule


def catalog(request: Request) -> list[Access]:
    return [Access("registry", "catalog", ("*",))]


def anyone(request: Request) -> list[Access]:
    """Only authentication, no particular resource (`GET /v2/`)."""
    return []


def public(request: Request) -> list[Access]:
    """No authentication at all: the route skips the Authorizer (`/healthz`, for load balancers
    and probes). Only for endpoints that reveal nothing about the registry's content."""
    return []


class Authorizer(Protocol):
    async def authorize(self, request: Request, needed: list[Access]) -> None:
        """Return when the request may proceed; raise RegistryError (401/403) otherwise."""

    async def permits(self, request: Request, access: Access) -> bool:
        """Whether the request's caller holds `access` (for optional behaviour such as a mount)."""


class AllowAll:
    async def authorize(self, request: Request, needed: list[Access]) -> None:
        return None

    async def permits(self, request: Request, access: Access) -> bool:
        return True
