"""The scrub (`registry check`): is every stored byte what its digest says, and can every manifest
be pulled whole?

It reads the tree and changes nothing unless asked to repair:
- every CAS blob is streamed and hashed (constant memory; several at a time where each read is a
  network round trip), so a flipped byte or a truncated object is found;
- every manifest revision of every repository is read and its references followed: an image
  manifest's config and layers must be in the CAS with the size its descriptor claims and linked
  in the repository; an index's children must be revisions of the repository (the same per-name
  `ManifestRules` a push is checked with relax this: a pull-through cache's absent blobs, sparse
  indexes);
- layer links naming blobs the CAS does not hold, and tag links naming revisions the repository
  does not have, are reported;
- uploads the backend holds open (S3 multipart uploads) that no upload state names, begun longer
  than `upload_age` ago, are reported (the scheduled purges remove them; the scrub never does);
- the listing index (storage.listing) is compared with the tree: a repository or tag it misses or
  names in excess is reported.

`repair=True` removes corrupt CAS blobs and the links to them (layer links of every repository),
and links (layer or tag) naming what is not there, once older than `grace` (a push may be writing
a link just now), then rebuilds the listing index. It invents nothing: a manifest that names
removed or missing content is reported until that content is pushed again (which any re-push of
the image does), never deleted.
A push racing the repair of the very blob it re-uploads can find its upload gone and its manifest
push refused (BLOB_UNKNOWN); it is never told that a push succeeded that it cannot pull.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from ocispec.digest import Digest
from ocispec.errors import OCIValidationError
from ocispec.manifest import ImageIndex, labelled_descriptors, parse_manifest

from . import paths
from .driver.base import FileInfo, iter_chunks
from .errors import BlobUnknown, CorruptLink, ManifestUnknown, PathNotFound, TagUnknown
from .links import read_link
from .manifests import STRICT, ManifestRules, ManifestStore
from .repository import TEMP_MIN_AGE, Storage

CHUNK = 1 << 20
#: Blobs hashed at once on drivers whose reads are network round trips (S3).
_REMOTE_CONCURRENCY = 8

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong, printed as one line: what, its digest (or key), where, and why."""

    problem: str  # "corrupt blob", "missing blob", "size mismatch", "missing manifest", …
    subject: str  # a digest, or a key for debris that has none
    repository: str = ""
    detail: str = ""

    def __str__(self) -> str:
        where = f" in {self.repository}" if self.repository else ""
        return f"{self.problem} {self.subject}{where}" + (f": {self.detail}" if self.detail else "")


@dataclass
class CheckReport:
    blobs: int = 0
    bytes: int = 0
    manifests: int = 0
    tags: int = 0
    findings: list[Finding] = field(default_factory=list)
    #: What `repair` removed, one line each.
    repaired: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        verdict = "clean" if self.clean else f"{len(self.findings)} problems"
        fixed = f"; repaired {len(self.repaired)}" if self.repaired else ""
        return (f"checked {self.blobs} blobs ({self.bytes} bytes), {self.manifests} manifests and "
                f"{self.tags} tags: {verdict}{fixed}")


def scrub(storage: Storage, repair: bool = False, rules: Callable[[str], ManifestRules] = lambda _: STRICT,
          grace: float = TEMP_MIN_AGE, upload_age: float = TEMP_MIN_AGE, now: float | None = None,
          progress: Callable[[Finding], None] | None = None) -> CheckReport:
    """Scrub the whole store (module docstring); `progress` is called with each finding as it is
    made (the report holds them all too)."""
    now = time.time() if now is None else now
    report = CheckReport()

    def found(finding: Finding) -> None:
        report.findings.append(finding)
        if progress is not None:
            progress(finding)

    sizes, corrupt = _verify_blobs(storage, report, found)
    for name in storage.all_repository_dirs():
        _check_repository(storage, name, sizes, corrupt, rules(name), report, found)
    _check_pending_uploads(storage, now - upload_age, found)
    for difference in storage.index_differences():
        tagged = difference.tag is not None
        found(Finding("listing index misses" if difference.missing else "listing index names",
                      f"tag {difference.tag}" if tagged else f"repository {difference.repository}",
                      difference.repository if tagged else "",
                      "in the tree, not listed" if difference.missing else "listed, not in the tree"))
    if repair:
        _repair(storage, sizes, corrupt, now - grace, report)
        rebuilt = storage.rebuild_index(now)  # after the repair: tags it removed leave the index too
        if rebuilt.added or rebuilt.removed:
            report.repaired.append(f"rebuilt the listing index: {rebuilt.added} entries added, "
                                   f"{rebuilt.removed} removed")
    return report


# -- the CAS -------------------------------------------------------------------------------------
def _verify_blobs(storage: Storage, report: CheckReport,
                  found: Callable[[Finding], None]) -> tuple[dict[Digest, int], set[Digest]]:
    """Hash every CAS blob; returns the size of each one present and the set whose bytes are not
    their digest."""
    sizes: dict[Digest, int] = {}
    corrupt: set[Digest] = set()
    entries = ((digest, info) for info in storage.driver.walk(paths.BLOBS)
               if (digest := paths.blob_data_digest(info.key)) is not None)
    workers = 1 if storage.capabilities.fast_small_reads else _REMOTE_CONCURRENCY
    for (digest, info), result in _bounded_map(lambda entry: _hash_blob(storage, *entry), entries, workers):
        if result is None:
            continue  # removed meanwhile (garbage collection)
        actual, size = result
        sizes[digest] = size
        report.blobs += 1
        report.bytes += size
        if actual != digest or size != info.size:
            corrupt.add(digest)
            found(Finding("corrupt blob", str(digest), detail=f"its {size} stored bytes hash to {actual}"
                          + (f" (the store lists {info.size})" if size != info.size else "")))
    return sizes, corrupt


def _hash_blob(storage: Storage, digest: Digest, info: FileInfo) -> tuple[Digest, int] | None:
    hasher = digest.hasher()
    size = 0
    try:
        with storage.driver.reader(info.key) as stream:
            for chunk in iter_chunks(stream, CHUNK):
                hasher.update(chunk)
                size += len(chunk)
    except PathNotFound:
        return None
    return Digest.from_hasher(digest.algorithm, hasher), size


def _bounded_map(work: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[tuple[T, R]]:
    """(item, work(item)) for each item, at most `workers` running and twice that waiting, so a
    store of millions of blobs never has millions of futures."""
    if workers <= 1:
        for item in items:
            yield item, work(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        window: list[tuple[T, Future[R]]] = []
        for item in items:
            window.append((item, pool.submit(work, item)))
            if len(window) >= 2 * workers:
                first, future = window.pop(0)
                yield first, future.result()
        for item, future in window:
            yield item, future.result()


# -- repositories --------------------------------------------------------------------------------
def _check_repository(storage: Storage, name: str, sizes: dict[Digest, int], corrupt: set[Digest],
                      rules: ManifestRules, report: CheckReport, found: Callable[[Finding], None]) -> None:
    repo = storage.repository(name)
    linked = set(repo.blobs.linked())
    for digest in sorted(linked - sizes.keys(), key=str):
        if repo.blobs.has(digest) and not storage.blobs.exists(digest):  # not just pushed
            found(Finding("missing blob", str(digest), name, "the repository links it, the store does not hold it"))
    revisions = set(repo.manifests.revisions())
    for digest in sorted(revisions, key=str):
        report.manifests += 1
        _check_manifest(repo.manifests, digest, sizes, corrupt, linked, revisions, rules, found)
    for tag, key in _tag_links(storage, name):
        report.tags += 1
        try:
            target = read_link(storage.driver, key)
        except PathNotFound:
            continue  # deleted meanwhile
        except CorruptLink:
            found(Finding("corrupt tag link", key, name, f"tag {tag} holds no digest"))
            continue
        if target not in revisions and not repo.manifests.exists(target):
            found(Finding("dangling tag", str(target), name,
                          f"tag {tag} names a manifest the repository does not have"))


def _tag_links(storage: Storage, name: str) -> list[tuple[str, str]]:
    """(tag, its link key) for every tag directory that has a link."""
    try:
        keys = storage.driver.list(paths.tags(name))
    except PathNotFound:
        return []
    found = []
    for key in keys:
        tag = key.rsplit("/", 1)[1]
        try:
            link = paths.tag_current_link(name, tag)
        except OCIValidationError:
            continue  # debris that is no tag (storage.tags ignores it too)
        found.append((tag, link))
    return found


def _check_manifest(manifests: ManifestStore, digest: Digest, sizes: dict[Digest, int], corrupt: set[Digest],
                    linked: set[Digest], revisions: set[Digest], rules: ManifestRules,
                    found: Callable[[Finding], None]) -> None:
    name = manifests.name
    if digest in corrupt:
        found(Finding("corrupt manifest", str(digest), name, "its stored bytes are not its digest"))
        return
    try:
        stored = manifests.get(digest)
    except ManifestUnknown:
        if digest in sizes or digest not in revisions:
            return  # removed meanwhile
        found(Finding("missing manifest", str(digest), name, "a revision whose bytes the store does not hold"))
        return
    try:
        manifest = parse_manifest(stored.raw, stored.media_type, max_size=None, strict=False)
    except OCIValidationError as exc:
        found(Finding("invalid manifest", str(digest), name, exc.message))
        return
    is_index = isinstance(manifest, ImageIndex)
    for where, descriptor in labelled_descriptors(manifest):
        if where == "subject" or descriptor.urls:
            continue  # a subject may be pushed later; non-distributable layers live elsewhere
        ref, of = descriptor.digest, f"{where} of manifest {digest}"
        size = sizes.get(ref)
        if size is None:
            size = _live_size(manifests, ref)  # stored since the CAS was hashed (a push meanwhile)?
        if is_index:
            if ref not in revisions and not manifests.exists(ref):
                if not rules.allow_sparse_indexes:
                    found(Finding("missing manifest", str(ref), name, f"{of}: not a manifest of the repository"))
                continue
        elif ref not in linked and not manifests.layer_links.has(ref):
            if not rules.allow_absent_blobs:
                what = "in the store but not linked in the repository" if size is not None else "not in the store"
                found(Finding("missing blob", str(ref), name, f"{of}: {what}"))
            continue
        if size is None:
            found(Finding("missing manifest" if is_index else "missing blob", str(ref), name,
                          f"{of}: not in the store"))
        elif ref in corrupt:
            found(Finding("corrupt blob", str(ref), name, f"{of}: its stored bytes are not its digest"))
        elif size != descriptor.size:
            found(Finding("size mismatch", str(ref), name,
                          f"{of} claims {descriptor.size} bytes, the store holds {size}"))


def _live_size(manifests: ManifestStore, digest: Digest) -> int | None:
    try:
        return manifests.blobs.stat(digest).size
    except BlobUnknown:
        return None


# -- uploads the backend holds open --------------------------------------------------------------
def _check_pending_uploads(storage: Storage, cutoff: float, found: Callable[[Finding], None]) -> None:
    for upload in storage.driver.pending_uploads():
        if upload.initiated >= cutoff or not paths.is_own_key(upload.key):
            continue  # a write in flight, or another tool's (in a shared bucket)
        owner = paths.upload_owner(upload.key)
        # An upload's multipart upload is named by its sidecar or, where writers hand their state
        # to the caller, by the upload's own state (storage.upload_state): it is the upload's as
        # long as that state is there (its purge aborts it with the upload).
        named = upload.resumable or storage.driver.capabilities.external_writer_state
        if owner is not None and named and _upload_state_exists(storage, *owner):
            continue
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(upload.initiated))
        purge = "the upload purge" if owner is not None else "the temp sweep"
        found(Finding("orphaned upload", upload.key, detail=f"multipart upload {upload.upload_id} begun {started} "
                      f"that no upload state names; its parts are billed until {purge} aborts it"))


def _upload_state_exists(storage: Storage, name: str, upload_id: str) -> bool:
    try:
        storage.driver.stat(paths.upload_state(name, upload_id))
        return True
    except (PathNotFound, ValueError):
        return False


# -- repair --------------------------------------------------------------------------------------
def _repair(storage: Storage, sizes: dict[Digest, int], corrupt: set[Digest], cutoff: float,
            report: CheckReport) -> None:
    driver = storage.driver
    for name in storage.all_repository_dirs():
        repo = storage.repository(name)
        for digest in repo.blobs.linked():
            if digest in corrupt:
                why = "corrupt"
            elif (digest not in sizes and not storage.blobs.exists(digest)
                  and _older(storage, paths.layer_link(name, digest), cutoff)):
                why = "missing"
            else:
                continue
            try:
                repo.blobs.unlink(digest)  # through the view: quota usage follows
            except BlobUnknown:
                continue  # removed meanwhile
            report.repaired.append(f"removed the link of {name} to {why} blob {digest}")
        for tag, key in _tag_links(storage, name):
            try:
                target = read_link(driver, key)
            except (PathNotFound, CorruptLink):
                continue
            if not repo.manifests.exists(target) and _older(storage, key, cutoff):
                try:
                    repo.tags.delete(tag)
                except TagUnknown:
                    continue
                report.repaired.append(f"removed tag {name}:{tag}, which named missing manifest {target}")
    for digest in sorted(corrupt, key=str):
        storage.blobs.delete(digest)
        report.repaired.append(f"removed corrupt blob {digest}")


def _older(storage: Storage, key: str, cutoff: float) -> bool:
    try:
        return storage.driver.stat(key).modified < cutoff
    except PathNotFound:
        return False
