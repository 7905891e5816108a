"""Repository names, tags and image references.

Grammar from the distribution-spec (repository names, tags) and Docker's reference normalisation
(`redis:7` → `docker.io/library/redis:7`, `index.docker.io` → `docker.io`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .digest import Digest
from .errors import ErrorCode, OCIValidationError

MAX_NAME_LENGTH = 255
DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = frozenset({"index.docker.io", "registry-1.docker.io"})
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_PATTERN = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN_PATTERN = re.compile(rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")


def validate_repository_name(name: str) -> str:
    """Return `name` if it is a valid repository name, else raise NAME_INVALID.

    A valid name has no `..`, no leading `/`, nothing but `[a-z0-9._/-]`, so it is also safe to use
    as a storage path below a repository root.
    """
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise OCIValidationError(ErrorCode.NAME_INVALID, f"invalid repository name {str(name)[:300]!r}")
    return name


def validate_tag(tag: str) -> str:
    """Return `tag` if it matches the tag grammar, else raise TAG_INVALID."""
    if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
        raise OCIValidationError(ErrorCode.TAG_INVALID, f"invalid tag {str(tag)[:200]!r}")
    return tag


def is_tag(text: str) -> bool:
    return bool(TAG_PATTERN.fullmatch(text))


@dataclass(frozen=True, slots=True)
class Reference:
    """A fully qualified image reference. At least one of `tag` and `digest` is set after `parse`
    (`latest` is filled in when neither is given)."""

    domain: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """`domain/repository`, without tag or digest."""
        return f"{self.domain}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest when known (it wins over the tag), else the tag."""
        return str(self.digest) if self.digest else (self.tag or DEFAULT_TAG)

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.domain, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """The short form Docker prints: `redis:7` for `docker.io/library/redis:7`."""
        text = str(self)
        if self.domain == DEFAULT_DOMAIN:
            text = text[len(DEFAULT_DOMAIN) + 1 :]
            if text.startswith(OFFICIAL_PREFIX) and "/" not in self.repository[len(OFFICIAL_PREFIX) :]:
                text = text[len(OFFICIAL_PREFIX) :]
        return text


def split_domain(name: str) -> tuple[str, str]:
    """Split `name` into (domain, remainder) the way Docker does, with docker.io as default."""
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse_reference(text: str, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse an image reference such as `redis:7`, `ghcr.io/a/b@sha256:…`, `localhost:5000/x:y@…`.

    Raises OCIValidationError with a message naming what is wrong.
    """
    if not isinstance(text, str) or not text or len(text) > 4096 or text != text.strip():
        raise OCIValidationError(ErrorCode.NAME_INVALID, f"invalid reference {str(text)[:200]!r}")
    remainder, at, digest_text = text.partition("@")
    digest = Digest.parse(digest_text) if at else None
    tag: str | None = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        validate_tag(tag)
    domain, repository = split_domain(remainder)
    if not DOMAIN_PATTERN.fullmatch(domain):
        raise OCIValidationError(ErrorCode.NAME_INVALID, f"invalid registry host {domain!r} in {text!r}")
    if repository.lower() != repository:
        raise OCIValidationError(ErrorCode.NAME_INVALID, f"repository name must be lowercase: {text!r}")
    validate_repository_name(repository)
    if tag is None and digest is None:
        tag = default_tag
    return Reference(domain, repository, tag, digest)
