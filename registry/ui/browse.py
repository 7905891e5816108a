"""What the repositories list and a repository's page show, read from storage (synchronous: the
pages run these in the thread pool).

A page costs its rows, not the store: the repositories list is pages of the listing index,
filtered by the search and by what the viewer may pull; a repository's tags sorted newest first
cost one read and one stat per tag (`TagStore.dated`, no manifest), and only the rows on the page
have their manifests read (media type, platforms, size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ocispec.digest import Digest
from ocispec.errors import OCIValidationError
from ocispec.manifest import ImageIndex, ImageManifest, Manifest, parse_manifest
from storage import ManifestUnknown, Repository, Storage, StorageError, TagInfo

from .image import read_config

#: Names read from the listing index per step while a search or the viewer's rights filter them.
_SCAN_STEP = 500
NEWEST, BY_NAME = "newest", "name"


@dataclass(frozen=True)
class RepositoryRow:
    name: str
    cached: bool                # a pull-through repository (registry.proxy)
    tags: int
    size: int                   # the unique blobs it links (layers and configs), as quotas count


@dataclass(frozen=True)
class ImageSummary:
    media_type: str
    size: int | None            # config + layers; an index: its platforms' sum; None: not all stored
    platforms: tuple[str, ...]
    artifact_type: str | None = None


@dataclass(frozen=True)
class TagRow:
    tag: str
    digest: Digest
    pushed: float
    image: ImageSummary


@dataclass
class TagPage:
    rows: list[TagRow]
    more: bool
    total: int
    untagged: list[tuple[Digest, ImageSummary]] = field(default_factory=list)


def indexed(storage: Storage) -> bool:
    """Whether lists can come from the listing index now; on a store that never had one, the first
    ask starts building it in the background and lists come from the tree meanwhile (as the API's)."""
    return storage.listing_known_ready or storage.listing_available()


def visible_repositories(storage: Storage, visible: Callable[[str], bool], query: str, after: str | None,
                         limit: int) -> tuple[list[str], bool]:
    """Up to `limit` repository names after `after` that contain `query` and that `visible` allows,
    and whether more follow. Pages of the listing index are read until the page is full, so a
    search, or a viewer who may pull few repositories, reads further than one page."""
    found: list[str] = []
    last = after
    from_index = indexed(storage)
    while True:
        if from_index:
            names, more = storage.repositories_page(last, _SCAN_STEP)
        else:
            names, more = [name for name in storage.repositories() if last is None or name > last], False
        for name in names:
            if query in name and visible(name):
                if len(found) == limit:
                    return found, True
                found.append(name)
        if not more or not names:
            return found, False
        last = names[-1]


def repository_row(repo: Repository, cached: bool) -> RepositoryRow:
    size = 0
    for digest in repo.blobs.linked():
        try:
            size += repo.blobs.stat(digest).size
        except StorageError:
            continue  # unlinked or removed since it was listed
    tags = repo.tags.count() if indexed(repo.storage) else len(repo.tags.resolved())
    return RepositoryRow(repo.name, cached, tags, size)


def tag_page(repo: Repository, sort: str, after: str | None, after_time: float | None, limit: int) -> TagPage:
    """The tags on one page of `repo`, newest first (`after`, `after_time`: the previous page's
    last row) or by name (`after`: the last name); the first page also lists untagged manifests.
    By name, a page is a page of the listing index; newest first needs every tag's time."""
    if sort == BY_NAME and indexed(repo.storage):
        names, more = repo.tags.page(after, limit)
        infos = [(tag, info) for tag in names if (info := _stat(repo, tag)) is not None]
        page = TagPage([_tag_row(repo, tag, info) for tag, info in infos], more, repo.tags.count())
        if after is None:
            page.untagged = untagged(repo, set(repo.tags.resolved().values()))
        return page
    dated = repo.tags.dated()
    if sort == BY_NAME:
        order = sorted(item for item in dated.items() if after is None or item[0] > after)
    else:
        order = sorted(dated.items(), key=lambda item: (-item[1].updated, item[0]))
        if after is not None and after_time is not None:
            cursor = (-after_time, after)
            order = [(tag, info) for tag, info in order if (-info.updated, tag) > cursor]
    rows = [_tag_row(repo, tag, info) for tag, info in order[:limit]]
    page = TagPage(rows, len(order) > limit, len(dated))
    if after is None:
        page.untagged = untagged(repo, {info.digest for info in dated.values()})
    return page


def _stat(repo: Repository, tag: str) -> TagInfo | None:
    try:
        return repo.tags.stat(tag)
    except StorageError:
        return None  # deleted since the page was listed


def _tag_row(repo: Repository, tag: str, info: TagInfo) -> TagRow:
    return TagRow(tag, info.digest, info.updated, summarize(repo, info.digest))


def untagged(repo: Repository, tagged: set[Digest], limit: int = 200) -> list[tuple[Digest, ImageSummary]]:
    """Manifests no tag points at, leaving out the platform manifests of this repository's indexes
    (they belong to their index): untagged pushes and referrers (signatures, SBOMs)."""
    parsed = {digest: manifest for digest in repo.manifests.revisions()
              if (manifest := load(repo, digest)) is not None}
    children = {entry.digest for manifest in parsed.values() if isinstance(manifest, ImageIndex)
                for entry in manifest.manifests}
    loose = sorted((d for d in parsed if d not in tagged and d not in children), key=str)
    return [(digest, summarize(repo, digest, parsed[digest])) for digest in loose[:limit]]


def load(repo: Repository, digest: Digest) -> Manifest | None:
    """The stored manifest `digest`, parsed; None when this repository does not have it (a sparse
    index's absent platform, or deleted since)."""
    try:
        stored = repo.manifests.get(digest)
        return parse_manifest(stored.raw, stored.media_type, max_size=None, strict=False)
    except (ManifestUnknown, OCIValidationError):
        return None


def summarize(repo: Repository, digest: Digest, manifest: Manifest | None = None) -> ImageSummary:
    manifest = manifest or load(repo, digest)
    if manifest is None:
        return ImageSummary("", None, ())
    artifact_type = manifest.effective_artifact_type
    if isinstance(manifest, ImageIndex):
        entries = [e for e in manifest.manifests if not e.is_attestation()]
        sizes = [_image_size(load(repo, e.digest)) for e in entries]
        total = None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)
        platforms = tuple(str(e.platform) for e in entries if e.platform is not None)
        return ImageSummary(manifest.media_type, total, platforms, artifact_type)
    config = read_config(repo, manifest) if isinstance(manifest, ImageManifest) else None
    platform = (config.platform,) if config is not None and config.platform else ()
    return ImageSummary(manifest.media_type, _image_size(manifest), platform, artifact_type)


def _image_size(manifest: Manifest | None) -> int | None:
    if not isinstance(manifest, ImageManifest):
        return None
    return manifest.config.size + sum(layer.size for layer in manifest.layers)
