"""What a console path below `/ui/r/` names: a repository, an image in it by tag or digest, or the
deletion of one (`<name>:<tag>/delete`, `<name>@<digest>/delete`). Repository names may end in
`/delete` themselves: only a path with a tag or digest before the suffix is a delete."""

from __future__ import annotations

from dataclasses import dataclass

from ocispec.digest import Digest
from ocispec.errors import OCIValidationError
from ocispec.reference import is_tag

from ..errors import RegistryBaseError

DELETE_SUFFIX = "/delete"


class NotATarget(RegistryBaseError, ValueError):
    """A path that names nothing the console has (a malformed tag or digest)."""


@dataclass(frozen=True)
class Target:
    name: str
    tag: str | None = None
    digest: Digest | None = None
    delete: bool = False

    @property
    def reference(self) -> str:
        """`:tag`, `@digest` or "" (the repository itself), as the console's paths write it."""
        return f"@{self.digest}" if self.digest is not None else f":{self.tag}" if self.tag else ""

    @property
    def is_image(self) -> bool:
        return self.tag is not None or self.digest is not None

    @classmethod
    def parse(cls, path: str) -> Target:
        if path.endswith(DELETE_SUFFIX):
            named = cls._parse(path[: -len(DELETE_SUFFIX)])
            if named.is_image:
                return Target(named.name, named.tag, named.digest, delete=True)
        return cls._parse(path)

    @classmethod
    def _parse(cls, path: str) -> Target:
        name, at, digest = path.partition("@")
        if at:
            try:
                return cls(name, digest=Digest.parse(digest))
            except OCIValidationError:
                raise NotATarget(path) from None
        head, slash, last = name.rpartition("/")
        if ":" in last:
            last, _, tag = last.partition(":")
            if not is_tag(tag):
                raise NotATarget(path)
            return cls(head + slash + last, tag=tag)
        return cls(name)
