"""The listing index's keys (storage.listing): the catalog and every repository's tags as markers,
laid out so that one driver `list_page` after a name's key is the page after that name. Built and
read back only here, as storage.paths does for the tree.
"""

from __future__ import annotations

import re

from ocispec.errors import OCIValidationError
from ocispec.reference import is_tag, validate_repository_name, validate_tag

from .paths import ROOT

# A marker's key is its name cut into chunks of INDEX_CHUNK characters, each a directory named the
# chunk and INDEX_DIR, but the last, padded with INDEX_END, which is a file named it and INDEX_END:
# `team/app` -> `te~/am~/.~~/ap~/p!!` (a `/` in a repository name is written `.~`). INDEX_END sorts
# before every character a name or tag may hold, INDEX_DIR after them, `/` is never inside a chunk
# and siblings all have one length, so the keys sort exactly as the names do, both as flat strings
# (an S3 listing) and directory by directory (what SeaweedFS and the disk driver walk): one driver
# `list_page` after a name's key is the page after that name. Two-character chunks keep every
# directory small (at most 100 entries for numbered names, 256 for hex, whatever their number), so
# on disk a page reads a few small directories; the suffixes keep a chunk such as `..` from being a
# special name, and a file from having a directory's name.
INDEX = f"{ROOT}/index"
INDEX_REPOSITORIES = f"{INDEX}/repositories"
INDEX_TAGS = f"{INDEX}/tags"
#: When the index was last rebuilt from the tree (JSON); without it the next listing builds it.
INDEX_BUILT = f"{INDEX}/built"
INDEX_CHUNK = 2
INDEX_END = "!"
INDEX_DIR = "~"
#: How a `/` of a repository name is written in its marker: `.` is always followed by [a-z0-9] in
#: a name, so `.~` sorts after every `.x` and before every character above `/`, as `/` does.
_SLASH = ".~"
_REPOSITORY_CHARS = re.compile(r"[a-z0-9._/-]*")
_TAG_CHARS = re.compile(r"[A-Za-z0-9_.-]*")


def _chunked(text: str) -> str:
    """The key below an index prefix of a name ("" for ""): the layout comment above INDEX."""
    if not text:
        return ""
    chunks = [text[at:at + INDEX_CHUNK] for at in range(0, len(text), INDEX_CHUNK)]
    last = chunks.pop().ljust(INDEX_CHUNK, INDEX_END)
    return "/".join([*(chunk + INDEX_DIR for chunk in chunks), last + INDEX_END])


def _unchunked(rest: str) -> str | None:
    parts = rest.split("/")
    if (any(len(part) != INDEX_CHUNK + 1 for part in parts) or parts[-1][-1] != INDEX_END
            or any(part[-1] != INDEX_DIR for part in parts[:-1])):
        return None
    return "".join(part[:-1] for part in parts).rstrip(INDEX_END)


def _valid_prefix(text: str, chars: re.Pattern[str]) -> str:
    """The longest prefix of `text` made of characters a name may hold: every name after `text`
    is after it too, so a page may start there (and drop what is not after `text`)."""
    match = chars.match(text)
    return match.group(0) if match else ""


def index_repository(name: str) -> str:
    """The catalog's marker of a repository."""
    return f"{INDEX_REPOSITORIES}/{_chunked(validate_repository_name(name).replace('/', _SLASH))}"


def index_repositories_after(last: str) -> str:
    """A key at or before the marker of the first repository named after `last` (any string); ""
    for the very first."""
    key = _chunked(_valid_prefix(last, _REPOSITORY_CHARS).replace("/", _SLASH))
    return f"{INDEX_REPOSITORIES}/{key}" if key else ""


def index_repository_name(key: str) -> str | None:
    """The repository a key of INDEX_REPOSITORIES (as `list_page` yields it) names; None for debris."""
    if not key.startswith(f"{INDEX_REPOSITORIES}/"):
        return None
    text = _unchunked(key[len(INDEX_REPOSITORIES) + 1:])
    if not text:
        return None
    name = text.replace(_SLASH, "/")
    try:
        return validate_repository_name(name)
    except OCIValidationError:
        return None


def index_tags(name: str) -> str:
    """The prefix of a repository's tag markers (`_tags` keeps `a`'s apart from `a/b`'s)."""
    return f"{INDEX_TAGS}/{validate_repository_name(name)}/_tags"


def index_tag_owner(key: str) -> tuple[str, str] | None:
    """(repository, tag) of a key below INDEX_TAGS (as a walk yields it); None for debris."""
    if not key.startswith(f"{INDEX_TAGS}/") or "/_tags/" not in key:
        return None
    name = key[len(INDEX_TAGS) + 1:key.index("/_tags/")]
    try:
        tag_name = index_tag_name(name, key)
    except OCIValidationError:
        return None
    return (name, tag_name) if tag_name is not None else None


def index_tag(name: str, tag_name: str) -> str:
    return f"{index_tags(name)}/{_chunked(validate_tag(tag_name))}"


def index_tags_after(name: str, last: str) -> str:
    """A key at or before the marker of the first tag of `name` after `last` (any string); "" for
    the very first."""
    key = _chunked(_valid_prefix(last, _TAG_CHARS))
    return f"{index_tags(name)}/{key}" if key else ""


def index_tag_name(name: str, key: str) -> str | None:
    """The tag a key below `index_tags(name)` names; None for debris."""
    return index_tag_below(f"{index_tags(name)}/", key)


def index_tag_below(prefix: str, key: str) -> str | None:
    """The tag a key below `prefix` (`index_tags(name)` and `/`, made once for a page) names."""
    if not key.startswith(prefix):
        return None
    tag_name = _unchunked(key[len(prefix):])
    return tag_name if tag_name and is_tag(tag_name) else None
