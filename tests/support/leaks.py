"""No secret in any log or audit line, for the whole suite: the secrets the tests use and the log
and audit files their servers write, remembered for the session, and the scan that tests/conftest.py
runs when the session ends (failing the run, naming the file and the kind of secret, never the
secret itself).

What is remembered:
- files: every Cargobay server's log and audit file (`start_cargobay` calls `watch_file`);
- secrets, with their kind: every password the test process hashes with bcrypt (the htpasswd files
  the helpers write: `watch_hashed_passwords`, installed by tests/conftest.py), S3 secret keys
  (`S3Server`), and whatever a test hands to `remember_secret` (robot secrets, tokens it fetched,
  webhook secrets). Values shorter than MIN_LENGTH are not remembered: they would match innocent text.
- and in every watched file, anything that looks like a JWT (`eyJ`, base64url of `{"`): an access
  or refresh token never belongs in a line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_LENGTH = 8
JWT_KIND = "JWT-looking token"
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{6,}")


@dataclass(frozen=True, order=True)
class Leak:
    path: Path
    line: int
    kind: str

    def describe(self) -> str:
        """What a report says: where, and which kind of secret; never the secret."""
        return f"{self.path}:{self.line}: a {self.kind}"


@dataclass
class Watch:
    """The secrets and files of one session (SESSION), or of a test's own scan."""

    secrets: dict[str, str] = field(default_factory=dict)  # value -> kind
    files: set[Path] = field(default_factory=set)

    def secret(self, value: str, kind: str) -> str:
        if len(value) >= MIN_LENGTH:
            self.secrets.setdefault(value, kind)
        return value

    def file(self, path: Path | str) -> Path:
        resolved = Path(path).resolve()
        self.files.add(resolved)
        return resolved

    def scan(self) -> list[Leak]:
        """Every (file, kind of secret) found, once each, at its first line; missing files are skipped."""
        leaks: list[Leak] = []
        needles = [(value.encode(), kind) for value, kind in self.secrets.items()]
        for path in sorted(self.files):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found: dict[str, int] = {}
            for needle, kind in needles:
                at = data.find(needle)
                if at >= 0 and kind not in found:
                    found[kind] = data.count(b"\n", 0, at) + 1
            jwt = _JWT.search(data)
            if jwt:
                found.setdefault(JWT_KIND, data.count(b"\n", 0, jwt.start()) + 1)
            leaks += [Leak(path, line, kind) for kind, line in found.items()]
        return sorted(leaks)


SESSION = Watch()


def remember_secret(value: str, kind: str) -> str:
    """Remember a secret a test uses (returned as is, so `token = remember_secret(fetch(), "token")`)."""
    return SESSION.secret(value, kind)


def remember_secrets(values: Iterable[str], kind: str) -> None:
    for value in values:
        SESSION.secret(value, kind)


def watch_file(path: Path | str) -> Path:
    """Scan this log or audit file at the end of the session."""
    return SESSION.file(path)


def watch_hashed_passwords(watch: Watch = SESSION) -> Callable[[], None]:
    """Remember every password the test process hashes with bcrypt (what the helpers put in
    htpasswd files is exactly that). Returns the undo."""
    import bcrypt

    real: Any = bcrypt.hashpw

    def hashpw(password: bytes, salt: bytes) -> bytes:
        try:
            watch.secret(password.decode(), "password")
        except (AttributeError, UnicodeDecodeError):
            pass
        return real(password, salt)

    bcrypt.hashpw = hashpw

    def undo() -> None:
        bcrypt.hashpw = real

    return undo


def report(leaks: list[Leak]) -> list[str]:
    return [leak.describe() for leak in leaks]
