"""Who is looking at the console, and what they may see and do.

With auth off, everyone sees everything (and deletes where `storage.delete.enabled` allows). With
auth on, the viewer is the user of a valid session, or an anonymous visitor; what they may do to a
repository is what the access rules grant that user (`AuthService.rules()`, the same rules tokens
are issued by), so the console never shows more than `docker pull` would give them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from ..access import DELETE, PULL
from ..context import context
from ..handlers.base import run_small
from ..requestinfo import request_info
from ..settings import Settings
from .session import (
    CSRF_COOKIE,
    EXPIRED,
    SESSION_COOKIE,
    Expired,
    Session,
    SessionSigner,
    csrf_token,
    same_origin,
    tokens_match,
)

if TYPE_CHECKING:  # the auth package loads only when auth is on
    from ..auth.service import AuthService

log = logging.getLogger("cargobay.ui")
_ALL = "*"


@dataclass(frozen=True)
class Viewer:
    """One request's viewer. `user` None: nobody logged in (or auth is off: `login` False)."""

    user: str | None
    login: bool                                   # whether the console has logins (auth on)
    repository_actions: Callable[[str], frozenset[str]]
    catalog: bool                                 # may see the operations page
    deletes_enabled: bool
    is_cached: Callable[[str], bool]              # a pull-through repository (never deleted here)
    #: Nobody logged in where anonymous visitors may see nothing: the pages send them to log in.
    must_log_in: bool = False
    session: Session | None = None

    def may(self, name: str, action: str) -> bool:
        actions = self.repository_actions(name)
        return action in actions or _ALL in actions

    def may_pull(self, name: str) -> bool:
        return self.may(name, PULL)

    def may_delete(self, name: str) -> bool:
        return self.deletes_enabled and not self.is_cached(name) and self.may(name, DELETE)


class Gate:
    """Turns a request into its `Viewer` (reading the session cookie when auth is on)."""

    def __init__(self, settings: Settings, service: AuthService | None, is_cached: Callable[[str], bool]) -> None:
        self.settings = settings
        self.service = service
        self.is_cached = is_cached
        self.signer = SessionSigner(service.derived_secret("ui-session"), settings.ui.session_ttl) \
            if service is not None else None

    async def viewer(self, request: Request) -> Viewer | Expired:
        """The viewer of `request`; EXPIRED when its session ran out (or its user's password changed)."""
        deletes = self.settings.storage.delete.enabled
        if self.service is None:
            return Viewer(None, False, lambda name: frozenset({_ALL}), True, deletes, self.is_cached)
        session = await self.session(request)
        if isinstance(session, Expired):
            return EXPIRED
        user = session.user if session is not None else None
        rules = self.service.rules()
        if user is not None:
            request_info(request).user = user  # the logs' and the audit trail's user
        return Viewer(user, True, lambda name: rules.actions(user, "repository", name),
                      bool(rules.actions(user, "registry", "catalog")), deletes, self.is_cached,
                      must_log_in=user is None and not rules.anonymous, session=session)

    async def session(self, request: Request) -> Session | Expired | None:
        """The request's session: None without one, or after its user logged out since it was issued."""
        value = request.cookies.get(SESSION_COOKIE)
        if not value or self.signer is None or self.service is None:
            return None
        session = self.signer.read(value)
        if not isinstance(session, Session):
            return session
        if session.fingerprint != self.service.users().fingerprint(session.user):
            log.info("console session of %r ended: user removed or password changed", session.user[:64])
            return EXPIRED
        logged_out = await run_small(request, context(request).storage.last_logout, session.user)
        if logged_out is not None and session.issued <= logged_out:
            return None
        return session

    def form_token(self, request: Request, session: Session | None) -> str:
        """The CSRF token the request's forms carry (registry.ui.session): the cookie's, bound to the
        session when someone is logged in."""
        token = csrf_token(request)
        return self.signer.bind(token, session) if session is not None and self.signer is not None else token

    def form_allowed(self, request: Request, submitted: object, session: Session | None) -> bool:
        """Whether a submitted form may change something: from this origin, with the right token."""
        if not same_origin(request, self.settings.http.public_url):
            return False
        if not request.cookies.get(CSRF_COOKIE):
            return False  # the token must come from the cookie the browser holds, not a new one
        return tokens_match(submitted, self.form_token(request, session))

    def issue(self, user: str) -> str:
        """A session cookie's value for `user`, who has just given the right password."""
        if self.signer is None or self.service is None:
            raise RuntimeError("sessions need auth.enabled")
        return self.signer.issue(user, self.service.users().fingerprint(user))
