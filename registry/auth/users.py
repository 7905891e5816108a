"""Users from an htpasswd file (bcrypt only, as `htpasswd -B` writes it), checked in constant time.

Every check runs exactly one bcrypt comparison: against the user's hash when the user exists, and
against a dummy hash of the same cost when it does not (or when its entry is not bcrypt), so the
time taken does not tell whether a name exists. Passwords are cut at 72 bytes, as bcrypt (and
Apache's htpasswd) always did.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path

import bcrypt

from ..errors import RegistryBaseError
from .files import locked, write_atomically

log = logging.getLogger("cargobay.auth")

_BCRYPT = re.compile(rb"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
DEFAULT_COST = 10
_dummy_hashes: dict[int, bytes] = {}
_dummy_lock = threading.Lock()


class UsersError(RegistryBaseError, ValueError):
    """An htpasswd file or user name that cannot be used; the message is one line."""


def _secret(password: str) -> bytes:
    return password.encode("utf-8")[:72]


def dummy_hash(cost: int) -> bytes:
    """A bcrypt hash of a random secret at `cost`, made once per process and cost."""
    with _dummy_lock:
        if cost not in _dummy_hashes:
            _dummy_hashes[cost] = bcrypt.hashpw(secrets.token_bytes(32), bcrypt.gensalt(cost))
        return _dummy_hashes[cost]


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    return bcrypt.hashpw(_secret(password), bcrypt.gensalt(cost)).decode()


class Users:
    def __init__(self, entries: dict[str, bytes]) -> None:
        self._entries = dict(entries)
        costs = Counter(int(m.group(1)) for h in entries.values() if (m := _BCRYPT.fullmatch(h)))
        self._dummy = dummy_hash(costs.most_common(1)[0][0] if costs else DEFAULT_COST)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def fingerprint(self, name: str) -> str:
        """Changes whenever the user's password does (binds refresh tokens to it); "" if unknown."""
        entry = self._entries.get(name)
        return hashlib.sha256(entry).hexdigest()[:32] if entry else ""

    def verify(self, name: str, password: str) -> bool:
        """Whether `password` is `name`'s; one bcrypt comparison either way."""
        entry = self._entries.get(name)
        usable = entry is not None and _BCRYPT.fullmatch(entry) is not None
        ok = bcrypt.checkpw(_secret(password), entry if usable else self._dummy)  # type: ignore[arg-type]
        return ok and usable


def parse_htpasswd(text: str, source: str = "htpasswd") -> Users:
    entries: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name:
            raise UsersError(f"{source} line {number}: expected name:hash")
        if not _BCRYPT.fullmatch(hashed.encode()):
            log.warning("%s line %d: %s has no bcrypt hash (htpasswd -B); that user cannot log in",
                        source, number, name)
        entries[name] = hashed.encode()
    return Users(entries)


def load_htpasswd(path: Path) -> Users:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsersError(f"cannot read htpasswd file {path}: {exc.strerror or exc}") from None
    return parse_htpasswd(text, str(path))


def set_password(path: Path, name: str, password: str, cost: int = DEFAULT_COST, create: bool = True,
                 replace: bool = False) -> None:
    """Add `name` (or change its password when `replace`) in the htpasswd file, atomically."""
    if not NAME.fullmatch(name):
        raise UsersError(f"{name!r} is not a valid user name (letters, digits, . _ @ -; at most 128)")
    line = f"{name}:{hash_password(password, cost)}"
    with locked(path):
        lines = path.read_text().splitlines() if path.exists() else []
        index = next((i for i, text in enumerate(lines) if text.split(":", 1)[0] == name), None)
        if index is not None and not replace:
            raise UsersError(f"user {name} already exists")
        if index is None and not create:
            raise UsersError(f"no user {name}")
        if index is None:
            lines.append(line)
        else:
            lines[index] = line
        write_atomically(path, ("\n".join(lines) + "\n").encode())


def remove_user(path: Path, name: str) -> None:
    with locked(path):
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [text for text in lines if text.split(":", 1)[0] != name]
        if len(kept) == len(lines):
            raise UsersError(f"no user {name}")
        write_atomically(path, ("\n".join(kept) + "\n").encode() if kept else b"")


class VerifiedCache:
    """Remembers recent successful checks for a short time, so that clients sending Basic
    credentials on every request (or asking for a token per repository) do not pay a bcrypt
    comparison each time. Keys are HMACs under a per-process secret of name, password and the
    user's current hash: a changed password or a removed user misses the cache."""

    def __init__(self, ttl: float = 60.0, size: int = 4096) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl, self._size = ttl, size
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def _id(self, name: str, password: str, fingerprint: str) -> bytes:
        message = b"\0".join((name.encode(), _secret(password), fingerprint.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def hit(self, name: str, password: str, fingerprint: str) -> bool:
        if not fingerprint:
            return False
        key = self._id(name, password, fingerprint)
        with self._lock:
            expires = self._seen.get(key)
            if expires is None or expires < time.monotonic():
                self._seen.pop(key, None)
                return False
            return True

    def add(self, name: str, password: str, fingerprint: str) -> None:
        key = self._id(name, password, fingerprint)
        with self._lock:
            self._seen[key] = time.monotonic() + self._ttl
            self._seen.move_to_end(key)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)
