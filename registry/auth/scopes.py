"""The Docker token-spec scope grammar and the `access` claim.

A scope is `type[(class)]:name:action[,action…]`, e.g. `repository:team/app:pull,push` or
`registry:catalog:*`; clients send several as repeated `scope` parameters or space-separated (OAuth2).
The name may itself hold colons (`repository:localhost:5000/app:pull`), so the type ends at the first
colon and the actions start after the last. Scopes this grammar cannot read are ignored, as
Distribution's token servers do: the caller simply gets nothing for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..access import Access

PULL, PUSH, DELETE, ALL = "pull", "push", "delete", "*"
REPOSITORY_ACTIONS = (PULL, PUSH, DELETE)
_TYPE = re.compile(r"^([a-z0-9]+)(?:\([a-z0-9]+\))?$")
_ACTION = re.compile(r"^(?:\*|[a-z][a-z0-9_-]*)$")
MAX_SCOPES = 32  # a token request naming more resources than this is refused as a whole


def parse_scope(text: str) -> Access | None:
    """One scope string → Access, or None when it is malformed."""
    first, last = text.find(":"), text.rfind(":")
    if first <= 0 or last <= first + 1:
        return None
    type_match = _TYPE.fullmatch(text[:first])
    name = text[first + 1:last]
    actions = tuple(dict.fromkeys(a.strip() for a in text[last + 1:].split(",") if a.strip()))
    if not type_match or not name or any(not _ACTION.fullmatch(a) for a in actions):
        return None
    return Access(type_match.group(1), name, actions)


def parse_scopes(values: Iterable[str]) -> list[Access]:
    """Every scope in `values` (each may hold several, space-separated), merged per resource."""
    parsed = []
    for value in values:
        for item in value.split():
            access = parse_scope(item)
            if access is not None:
                parsed.append(access)
    return merge(parsed)


def merge(accesses: Iterable[Access]) -> list[Access]:
    """One Access per (type, name), actions united in first-seen order."""
    merged: dict[tuple[str, str], dict[str, None]] = {}
    for access in accesses:
        merged.setdefault((access.type, access.name), {}).update(dict.fromkeys(access.actions))
    return [Access(t, n, tuple(actions)) for (t, n), actions in merged.items()]


def format_scope(accesses: Iterable[Access]) -> str:
    """The challenge's `scope` value: space-separated scope strings."""
    return " ".join(access.scope() for access in accesses)


def holds(actions: Iterable[str], action: str) -> bool:
    """Whether a granted action set covers `action` (`*` covers everything, as in Distribution)."""
    granted = set(actions)
    return ALL in granted or action in granted


def covers(granted: Iterable[Access], needed: Access) -> bool:
    """Whether `granted` holds every action `needed` asks for on its resource."""
    actions: set[str] = set()
    for access in granted:
        if access.type == needed.type and access.name == needed.name:
            actions.update(access.actions)
    return all(holds(actions, action) for action in needed.actions)


def to_claim(accesses: Iterable[Access]) -> list[dict[str, Any]]:
    """The JWT `access` claim."""
    return [{"type": a.type, "name": a.name, "actions": list(a.actions)} for a in accesses]


def from_claim(claim: object) -> list[Access]:
    """The `access` claim of a verified token → Access list. Raises ValueError on a malformed claim."""
    if claim is None:
        return []
    if not isinstance(claim, list):
        raise ValueError("access claim is not a list")
    accesses = []
    for entry in claim:
        if not isinstance(entry, dict):
            raise ValueError("access entry is not an object")
        type_, name, actions = entry.get("type"), entry.get("name"), entry.get("actions") or []
        if not isinstance(type_, str) or not isinstance(name, str) or not isinstance(actions, list) \
                or not all(isinstance(a, str) for a in actions):
            raise ValueError("access entry has the wrong shape")
        accesses.append(Access(type_, name, tuple(actions)))
    return merge(accesses)
