"""The facade the registry talks to: `Storage` (the whole store) and `Repository` (one name)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ocispec.reference import validate_repository_name

from . import paths
from .blobs import BlobStore, RepositoryBlobs
from .driver.base import DriverCapabilities, StorageDriver
from .driver.factory import DriverOptions, open_driver
from .driver.notifying import DeleteNotifyingDriver
from .errors import PathNotFound
from .link_board import LinkBoard
from .links import link_exists
from .listing import ListingIndex
from .listing_rebuild import IndexDifference, IndexRebuild, differences, rebuild
from .logouts import last_logout, record_logout
from .manifest_cache import ManifestCache
from .manifests import ManifestStore
from .recent_links import NO_MEMORY, RecentLinks, remembers_links
from .referrers import ReferrerStore
from .runs import last_run, record_run
from .tags import TagStore
from .uploads import RepositoryUploads, UploadStore

log = logging.getLogger("cargobay.storage")

#: The youngest a temporary object can be and still be swept (seconds). A `put` keeps its temp file
#: for one write and fsync; a server-side copy of the largest object takes well under an hour.
TEMP_MIN_AGE = 3600.0


class Repository:
    """Everything about one repository. Creating one validates the name; it does not touch storage.

    Its views are the way to its content: `blobs` and `uploads` check that what they are asked
    for belongs to this repository (a blob's link, an upload's place), whatever the caller does."""

    def __init__(self, storage: Storage, name: str) -> None:
        self.name = validate_repository_name(name)
        self.storage = storage
        self.blobs = RepositoryBlobs(storage.blobs, name, serving=True)
        self.uploads = RepositoryUploads(storage.uploads, name)
        self.manifests = ManifestStore(storage.driver, storage.blobs, name, storage.manifest_cache, serving=True)
        self.tags: TagStore = self.manifests.tags
        self.referrers: ReferrerStore = self.manifests.referrers

    def exists(self) -> bool:
        """Whether the repository has manifests, as `Storage.repositories` counts them: one `stat`
        of its manifests directory, no walk (on disk, a directory emptied by deletes still counts;
        the catalog's pages count manifest revisions)."""
        return link_exists(self.storage.driver, paths.manifests(self.name))


class Storage:
    def __init__(self, driver: StorageDriver, link_cache_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, board: LinkBoard | None = None) -> None:
        """`link_cache_seconds`: how long serving may believe a link it saw (storage.recent_links),
        where a check is a round trip (a driver without `fast_small_reads`); 0, and on disk: never.
        `clock` measures those seconds (tests bring their own); `board` is what the processes of
        one server share, what each saw and deleted (storage.link_board;
        None: this process alone)."""
        if remembers_links(driver.capabilities, link_cache_seconds):
            recent = RecentLinks(link_cache_seconds, clock=clock, board=board)
            driver = DeleteNotifyingDriver(driver, recent.forget_deleted)  # every delete here is forgotten at once
        else:
            recent = NO_MEMORY
        self.driver = driver
        self.blobs = BlobStore(driver, recent)
        self.uploads = UploadStore(driver, self.blobs)
        #: Manifests already read, for every repository's views (storage.manifest_cache).
        self.manifest_cache = ManifestCache()
        self.listing = ListingIndex(driver)
        #: Once the listing index is known to be built it stays so (a rebuild only mends it).
        self._listing_built = False
        self._listing_lock = threading.Lock()
        self._listing_builder: threading.Thread | None = None

    @property
    def capabilities(self) -> DriverCapabilities:
        """What the driver declares it can do (callers such as the HTTP layer choose by it)."""
        return self.driver.capabilities

    def repository(self, name: str) -> Repository:
        return Repository(self, name)

    def record_run(self, job: str, figures: Mapping[str, Any]) -> None:
        """Keep `job`'s run (its figures, finished now) as its last (storage.runs)."""
        record_run(self.driver, job, figures)

    def last_run(self, job: str) -> dict[str, Any] | None:
        return last_run(self.driver, job)

    def record_logout(self, user: str) -> None:
        """`user` logged out of the web console now: sessions issued before are over (storage.logouts)."""
        record_logout(self.driver, user)

    def last_logout(self, user: str) -> float | None:
        return last_logout(self.driver, user)

    def check_health(self) -> None:
        """Raise StorageError unless the backend answers one cheap call: a `stat` of the layout's
        root (on S3 a HEAD and at most a one-key listing). An empty store is healthy."""
        try:
            self.driver.stat(paths.ROOT)
        except PathNotFound:
            pass

    def repositories(self) -> list[str]:
        """Every repository that has manifests, sorted (the catalog). Derived from the tree."""
        return sorted(name for name, data_dirs in self._walk(paths.REPOSITORIES, "")
                      if paths.MANIFESTS_DIR in data_dirs)

    def repositories_page(self, last: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` names `repositories` has after `last` (any string), and whether more
        follow, from the listing index (storage.listing): one listing, however many there are.
        Builds the index first if no replica has yet (`listing_ready`)."""
        self.listing_ready()
        return self.listing.repositories(last, limit)

    @property
    def listing_known_ready(self) -> bool:
        """True once the index was seen built in this process (`listing_available`, `listing_ready`):
        from then on a page costs only its listing (a caller may make it where it makes other quick
        reads)."""
        return self._listing_built

    def listing_ready(self) -> None:
        """Make sure the listing index has been built from the tree once (by any replica or
        `registry check --repair`): the first listing of a store written before the index
        existed builds it, the others wait for that; afterwards this costs nothing."""
        if self._listing_built:
            return
        with self._listing_lock:
            if not self._listing_built and self.listing.built_at() is None:
                log.info("building the listing index of the catalog and tags from the tree")
                self.rebuild_index()
            self._listing_built = True

    def listing_available(self) -> bool:
        """Whether pages can come from the listing index now. On a store whose index was never
        built (written before it existed) the first call starts building it in the background, once
        per process, and answers False: until the build is done callers page the tree
        (`repositories`, `TagStore.list`), as slowly as before the index existed, instead of waiting
        for a build that takes minutes on a big store. A failed build is tried again by the next call."""
        if self._listing_built:
            return True
        if self.listing.built_at() is not None:
            self._listing_built = True
            return True
        with self._listing_lock:
            if self._listing_builder is None:
                self._listing_builder = threading.Thread(target=self._build_listing, name="listing-index",
                                                         daemon=True)
                self._listing_builder.start()
        return False

    def _build_listing(self) -> None:
        try:
            self.listing_ready()
        except Exception as exc:  # storage unreachable, say: listings keep paging the tree meanwhile
            log.warning("building the listing index failed (%s); the next listing tries again", exc)
            with self._listing_lock:
                self._listing_builder = None

    def rebuild_index(self, now: float | None = None) -> IndexRebuild:
        """Make the listing index what the tree says (storage.listing_rebuild)."""
        return rebuild(self.driver, now)

    def index_differences(self) -> list[IndexDifference]:
        """Where the listing index and the tree disagree (for `registry check`)."""
        return differences(self.driver)

    def all_repository_dirs(self) -> list[str]:
        """Every repository directory, with or without manifests (uploads may exist before any
        manifest); used by maintenance jobs."""
        return sorted(name for name, _ in self._walk(paths.REPOSITORIES, ""))

    def _walk(self, key: str, name: str) -> Iterator[tuple[str, set[str]]]:
        """(name, its data directories such as `_manifests`) for every repository below `key`;
        names nest (`a` and `a/b` can both be repositories), data directories are told apart by
        `paths.is_data_dir`."""
        try:
            children = self.driver.list(key)
        except PathNotFound:
            return
        data_dirs: set[str] = set()
        for child in children:
            leaf = child.rsplit("/", 1)[1]
            if paths.is_data_dir(leaf):
                data_dirs.add(leaf)
            else:
                yield from self._walk(child, f"{name}/{leaf}" if name else leaf)
        if data_dirs and name:
            yield name, data_dirs

    def purge_uploads(self, older_than_seconds: float, now: float | None = None) -> int:
        """Remove uploads started more than `older_than_seconds` ago, and the temp files and
        unfinished copies writers killed mid-write left anywhere in the store (`sweep_temp`);
        returns how many uploads were removed."""
        removed = self.uploads.purge(self.all_repository_dirs(), older_than_seconds, now)
        self.sweep_temp(older_than_seconds, now)
        return removed

    def sweep_temp(self, older_than_seconds: float, now: float | None = None) -> int:
        """Remove temporary objects older than `older_than_seconds`, but never younger than
        TEMP_MIN_AGE: a temp file lives for one write, so one that old has no writer left.
        Uploads are left to their own purge while their state exists, and keys this store does not
        write (another tool's, in a shared bucket) are never touched. Returns how many were removed."""
        age = max(older_than_seconds, TEMP_MIN_AGE)
        removed = self.driver.remove_stale_temp((now or time.time()) - age, spare=self._not_for_the_sweep)
        if removed:
            log.info("removed %d temporary files left by interrupted writes", removed)
        return removed


    def _not_for_the_sweep(self, key: str) -> bool:
        """Keys of another tool (in a shared bucket), and an upload's while its state exists: its
        purge owns it then. Below an upload that is gone only debris is left (on S3 a multipart
        upload a session killed mid-PATCH began, which no state names): nothing else removes it.
        One HEAD, only for what is old enough to go."""
        if not paths.is_own_key(key):
            return True
        owner = paths.upload_owner(key) if paths.is_upload_key(key) else None
        if owner is None:
            return paths.is_upload_key(key)  # an upload's area, but no upload's: left alone
        try:
            self.driver.head(paths.upload_state(*owner))
        except PathNotFound:
            return False
        return True


def open_storage(options: DriverOptions) -> Storage:
    """The store the driver options describe (`driver_options(kind, settings section)`)."""
    return Storage(open_driver(options))
