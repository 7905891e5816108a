"""Fetch orchestration: up-to-date check, resolve, concurrent verified blob downloads, record.

`pull` is what `puller fetch` does; `ensure_image` is what `unpack`/`export` use to get an image
into the store when it is not there yet. `puller pull` (`pipeline`) uses the same steps, applying
layers while `Downloads` still runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distclient import DEFAULT_JOBS, RegistryClient
from ocispec.digest import Digest
from ocispec.manifest import MAX_MANIFEST_SIZE, Descriptor, ImageManifest
from ocispec.platform import Platform, match_rank
from ocispec.reference import Reference

from .errors import Cancelled, NotFound, VerificationError
from .progress import Emit, Event
from .resolve import Resolved, resolve
from .store import ImageRecord, Store


@dataclass(frozen=True)
class PullResult:
    reference: str
    digest: Digest
    manifest: ImageManifest
    up_to_date: bool
    downloaded: int


def _config_info(raw: bytes) -> tuple[Platform | None, str | None]:
    """Platform and creation time from an image config (None for what it does not say)."""
    try:
        obj: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    platform = None
    if isinstance(obj.get("os"), str) and isinstance(obj.get("architecture"), str):
        platform = Platform(obj["os"], obj["architecture"], str(obj.get("variant") or ""))
    created = obj.get("created") if isinstance(obj.get("created"), str) else None
    return platform, created


def _serves(record: ImageRecord, platform: Platform) -> bool:
    """Whether the stored image is what a request for `platform` gets. One picked from an index
    must match exactly: a fallback (arm/v6 for arm/v7) may not be what the index has for it."""
    if record.resolved == str(record.digest) or record.platform is None:
        return True  # not from an index: there is no other choice
    return match_rank(platform, record.platform) == 0


def _up_to_date(client: RegistryClient, store: Store, ref: Reference, platform: Platform) -> ImageRecord | None:
    """The stored record when the reference still resolves (HEAD) to what is stored, completely."""
    try:
        record = store.find(str(ref))
    except NotFound:
        return None
    if record.reference != str(ref) or not _serves(record, platform):
        return None
    try:
        manifest = store.manifest(record.digest)
    except (NotFound, VerificationError):
        return None
    if not isinstance(manifest, ImageManifest) or not store.is_complete(manifest):
        return None
    current = ref.digest or client.head_manifest(ref)
    return record if current is not None and str(current) == record.resolved else None


def _download(client: RegistryClient, store: Store, resolved: Resolved, desc: Descriptor, role: str,
              emit: Emit, cancel: threading.Event) -> int:
    """Fetch one blob into the store unless it is there; returns the bytes downloaded."""
    digest = str(desc.digest)
    if store.has_blob(desc):
        emit(Event("blob-exists", {"digest": digest, "size": desc.size, "role": role}))
        return 0
    on_wait = lambda: emit(Event("blob-wait", {"digest": digest, "size": desc.size, "role": role}))  # noqa: E731
    with store.ingest(desc, on_wait, cancel) as ingest:
        if ingest is None:
            emit(Event("blob-exists", {"digest": digest, "size": desc.size, "role": role}))
            return 0
        start = ingest.offset
        emit(Event("blob-start", {"digest": digest, "size": desc.size, "role": role, "offset": start}))

        def progress(done: int) -> None:
            if cancel.is_set():
                raise Cancelled()
            emit(Event("blob-progress", {"digest": digest, "done": done, "size": desc.size}))

        client.fetch_blob(resolved.ref, desc, ingest, progress, prefer=resolved.endpoint)
        emit(Event("blob-done", {"digest": digest, "size": desc.size, "role": role}))
        return desc.size - start


class Downloads:
    """The blobs of one image that the store lacks, downloading in the background, `jobs` at a time:
    the config first, then the layers from the bottom up (the order unpacking needs them in). The
    first failure stops the others at their next chunk (their partial files stay for a resume);
    `wait` and `total` raise it. Use as a context manager: leaving it stops what still runs.

    Plain threads taking jobs from a list, rather than concurrent.futures: that module loads
    logging (with traceback, linecache, tokenize...), several ms of every `puller pull`."""

    def __init__(self, client: RegistryClient, store: Store, resolved: Resolved, jobs: int, emit: Emit) -> None:
        manifest = resolved.manifest
        todo: dict[Digest, tuple[Descriptor, str]] = {manifest.config.digest: (manifest.config, "config")}
        for layer in manifest.layers:
            todo.setdefault(layer.digest, (layer, "layer"))
        self._cancel = threading.Event()
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._todo = list(todo.items())  # not started yet, in order
        self._outcomes: dict[Digest, int | BaseException] = {}  # bytes downloaded, or what it raised
        self._digests = list(todo)
        self._closed = False
        self._run: Callable[[Descriptor, str], int] = (
            lambda desc, role: _download(client, store, resolved, desc, role, emit, self._cancel))
        self._threads: list[threading.Thread] = []
        try:
            for i in range(min(max(1, jobs), len(todo))):
                thread = threading.Thread(target=self._work, name=f"puller-fetch-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:  # Ctrl-C while the first downloads already run: stop them
            self.close()
            raise

    def __enter__(self) -> Downloads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self) -> None:
        """One worker: the next blob not started, until none is left or the downloads stop."""
        while True:
            with self._changed:
                if not self._todo or self._cancel.is_set():
                    return
                digest, (desc, role) = self._todo.pop(0)
            try:
                outcome: int | BaseException = self._run(desc, role)
            except BaseException as exc:  # handed to whoever waits for it
                outcome = exc
            with self._changed:
                self._outcomes[digest] = outcome
                if isinstance(outcome, BaseException) and not isinstance(outcome, Cancelled) and self._error is None:
                    self._error = outcome
                    self._cancel.set()
                self._changed.notify_all()

    def wait(self, digest: Digest) -> None:
        """Until blob `digest` is in the store; raises as soon as any download failed."""
        with self._changed:
            while self._error is None and digest not in self._outcomes and not self._closed:
                self._changed.wait()
            outcome = self._outcomes.get(digest)
        if self._error is not None:
            raise self._error
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is None:  # closed before it ran
            raise Cancelled()

    def total(self) -> int:
        """Wait for every download; the bytes they downloaded."""
        for digest in self._digests:
            self.wait(digest)
        return sum(n for n in self._outcomes.values() if isinstance(n, int))

    def close(self) -> None:
        """Stop what still runs (running downloads stop at their next chunk; partial files stay);
        what has not started does not."""
        with self._changed:
            if len(self._outcomes) < len(self._digests):
                self._cancel.set()
            self._todo.clear()
            self._closed = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()


def resolve_checked(client: RegistryClient, ref: Reference, platform: Platform, store: Store,
                     emit: Emit) -> Resolved:
    """Resolve `ref` for `platform`, refuse an oversized config, announce it, check the store's space."""
    resolved = resolve(client, ref, platform)
    manifest = resolved.manifest
    if manifest.config.size > MAX_MANIFEST_SIZE:
        raise VerificationError(f"{ref}: config of {manifest.config.size} bytes refused (limit {MAX_MANIFEST_SIZE})")
    emit(Event("resolved", {"reference": str(ref), "digest": str(resolved.descriptor.digest),
                            "platform": str(resolved.descriptor.platform) if resolved.descriptor.platform else None,
                            "layers": len(manifest.layers), "size": sum(d.size for d in manifest.blobs())}))
    store.check_space(list(manifest.blobs()))
    return resolved


def record_image(store: Store, key: str, resolved: Resolved) -> Descriptor:
    """Every blob is stored: store the manifest and point `key` at it."""
    manifest = resolved.manifest
    store.put_blob(manifest.raw, resolved.descriptor.digest)
    config_platform, created = _config_info(store.read_blob(manifest.config.digest))
    desc = Descriptor(manifest.media_type, resolved.descriptor.digest, len(manifest.raw),
                      platform=resolved.descriptor.platform or config_platform)
    store.set_image(key, desc, resolved.top_digest, created)
    return desc


def stored_up_to_date(client: RegistryClient, store: Store, ref: Reference, platform: Platform,
                      emit: Emit) -> tuple[ImageRecord, ImageManifest] | None:
    """The stored image when `ref` still resolves to it (announced as up to date), else None."""
    record = _up_to_date(client, store, ref, platform)
    if record is None:
        return None
    manifest = store.manifest(record.digest)
    if not isinstance(manifest, ImageManifest):  # _up_to_date checked it; the store may have changed
        raise VerificationError(f"{ref}: the stored manifest {record.digest} is not an image manifest")
    emit(Event("up-to-date", {"reference": str(ref), "digest": str(record.digest)}))
    return record, manifest


def pull(client: RegistryClient, store: Store, ref: Reference, platform: Platform,
         jobs: int = DEFAULT_JOBS, emit: Emit = lambda e: None) -> PullResult:
    """Bring `ref` (for `platform`) into `store`, verified; a no-op when it is up to date."""
    started = time.monotonic()
    key = str(ref)
    with store.using():
        stored = stored_up_to_date(client, store, ref, platform, emit)
        if stored is not None:
            return PullResult(key, stored[0].digest, stored[1], True, 0)
        resolved = resolve_checked(client, ref, platform, store, emit)
        with Downloads(client, store, resolved, jobs, emit) as downloads:
            downloaded = downloads.total()
        desc = record_image(store, key, resolved)
    emit(Event("done", {"reference": key, "digest": str(desc.digest), "downloaded": downloaded,
                        "elapsed": round(time.monotonic() - started, 3)}))
    return PullResult(key, desc.digest, resolved.manifest, False, downloaded)


#: Makes the registry client when one is needed (`ensure_image` only talks to a registry when the
#: store lacks the image).
ClientFactory = Callable[[], RegistryClient]


def ensure_image(client_factory: ClientFactory, store: Store, ref_text: str, ref: Reference, platform: Platform | None,
                 jobs: int, emit: Emit) -> tuple[ImageRecord, ImageManifest, bytes]:
    """The stored image for `ref_text`, fetching it first when the store does not have it complete,
    or has it for another platform than a requested one (`platform` None: whatever is stored, else
    this machine's)."""
    try:
        record, manifest, config = store.image(ref_text)
        if store.is_complete(manifest) and (platform is None or _serves(record, platform)):
            return record, manifest, config
    except NotFound:
        pass
    pull(client_factory(), store, ref, platform or Platform.host(), jobs, emit)
    return store.image(str(ref))
