"""What the repositories list and a repository's pages show, read from storage (synchronous: the
pages run these in the thread pool).

What a page costs: the repositories list reads pages of the listing index, filtered by the search
and by what the viewer may pull (a scan stops after `SCAN_LIMIT` names and offers to go on), and
each row's tag count (the index, a listing per thousand) and size (a listing and a size per blob).
A repository's tags by name are a page of the index; newest first, every tag's link and time (one
read and one stat a tag, no manifest). Either way only the page's rows have their manifests read.
The untagged manifests are a page of their own: finding them reads every manifest of the
repository once.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ocispec.digest import Digest
from ocispec.manifest import ImageIndex, ImageManifest, Manifest
from storage import Repository, Storage, TagInfo

from .image import read_config

#: Names read from the listing index per step while a search or the viewer's rights filter them.
_SCAN_STEP = 500
#: Names one request reads at most while filling a page; beyond, the page offers to go on.
SCAN_LIMIT = 10_000
#: Manifests read at once where each read is a round trip (S3).
_READ_CONCURRENCY = 16
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


@dataclass(frozen=True)
class Page:
    """One page of a list: its rows, and where the next begins (None: this is the last)."""

    rows: list[str]
    next_after: str | None


@dataclass(frozen=True)
class TagPage:
    rows: list[TagRow]
    more: bool
    total: int


def visible_repositories(storage: Storage, visible: Callable[[str], bool], query: str, after: str | None,
                         limit: int) -> Page:
    """Up to `limit` repository names after `after` that contain `query` and that `visible` allows.
    The index is read until the page is full, or until `SCAN_LIMIT` names were looked at: then the
    page may be short, and the next one goes on from the last name looked at."""
    found: list[str] = []
    last = after
    scanned = 0
    # On a store that never had a listing index, the first ask starts building it in the background
    # and names come from the tree meanwhile (as the API's pages: `Storage.listing_available`).
    from_index = storage.listing_available()
    while True:
        if from_index:
            names, more = storage.repositories_page(last, _SCAN_STEP)
        else:
            names, more = [name for name in storage.repositories() if last is None or name > last], False
        for name in names:
            scanned += 1
            if query in name and visible(name):
                found.append(name)
                if len(found) == limit:
                    return Page(found, name if more or name != names[-1] else None)
            if scanned >= SCAN_LIMIT:
                return Page(found, name if more or name != names[-1] else None)
        if not more or not names:
            return Page(found, None)
        last = names[-1]


def repository_row(repo: Repository, cached: bool) -> RepositoryRow:
    tags = repo.tags.count() if repo.storage.listing_available() else len(repo.tags.resolved())
    return RepositoryRow(repo.name, cached, tags, repo.blobs.linked_size())


def tag_page(repo: Repository, sort: str, after: str | None, after_time: float | None, limit: int) -> TagPage:
    """The tags on one page of `repo`, by name (`after`: the last name of the previous page) or
    newest first (`after`, `after_time`: the previous page's last row)."""
    if sort == BY_NAME and repo.storage.listing_available():
        names, more = repo.tags.page(after, limit)
        infos = [(tag, info) for tag in names if (info := repo.tags.find(tag)) is not None]  # not deleted since
        return TagPage([_tag_row(repo, tag, info) for tag, info in infos], more, repo.tags.count())
    dated = repo.tags.dated()
    if sort == BY_NAME:
        order = sorted(item for item in dated.items() if after is None or item[0] > after)
    else:
        order = sorted(dated.items(), key=lambda item: (-item[1].updated, item[0]))
        if after is not None and after_time is not None:
            cursor = (-after_time, after)
            order = [(tag, info) for tag, info in order if (-info.updated, tag) > cursor]
    return TagPage([_tag_row(repo, tag, info) for tag, info in order[:limit]], len(order) > limit, len(dated))


def _tag_row(repo: Repository, tag: str, info: TagInfo) -> TagRow:
    return TagRow(tag, info.digest, info.updated, summarize(repo, info.digest))


def untagged_page(repo: Repository, after: str | None, limit: int) -> tuple[list[tuple[Digest, ImageSummary]], bool]:
    """Manifests no tag points at, by digest after `after`, and whether more follow. Left out: the
    platform manifests of this repository's indexes (they belong to their index). Referrers
    (signatures, SBOMs) are listed. Reads every manifest of the repository once."""
    digests = repo.manifests.revisions()
    if repo.storage.capabilities.fast_small_reads or len(digests) < 2:
        manifests = [repo.manifests.parsed(d) for d in digests]
    else:
        with ThreadPoolExecutor(max_workers=min(_READ_CONCURRENCY, len(digests))) as pool:
            manifests = list(pool.map(repo.manifests.parsed, digests))
    parsed = {d: m for d, m in zip(digests, manifests, strict=True) if m is not None}
    children = {entry.digest for manifest in parsed.values() if isinstance(manifest, ImageIndex)
                for entry in manifest.manifests}
    tagged = {info.digest for info in repo.tags.dated().values()}
    loose = sorted((d for d in parsed if d not in tagged and d not in children and (after is None or str(d) > after)),
                   key=str)
    return [(digest, summarize(repo, digest, parsed[digest])) for digest in loose[:limit]], len(loose) > limit


def summarize(repo: Repository, digest: Digest, manifest: Manifest | None = None) -> ImageSummary:
    manifest = manifest or repo.manifests.parsed(digest)
    if manifest is None:
        return ImageSummary("", None, ())
    artifact_type = manifest.effective_artifact_type
    if isinstance(manifest, ImageIndex):
        entries = [e for e in manifest.manifests if not e.is_attestation()]
        sizes = [_image_size(repo.manifests.parsed(e.digest)) for e in entries]
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
