"""`puller pull REF DIR`: fetch what the store lacks and build the root filesystem, in one process,
with download and unpack pipelined.

Layers download in the background (`pull.Downloads`, `jobs` at a time, config first, then the
layers bottom up) while this thread applies each one, in order, as soon as it and every layer below
it are stored: time to rootfs approaches the larger of download and unpack rather than their sum.

A layer is applied only from its stored blob, which the store makes visible only after its size
and digest verified; nothing unverified ever reaches the tar reader or the filesystem. Applying the
bytes while they stream in, and rolling back on a digest mismatch, was considered and rejected:
the layer's tar would be parsed and its entries created from content the manifest does not vouch
for yet (a mirror or a man in the middle choosing what is written, how much, and which directory
a whiteout empties), a layer cannot be rolled back on its own once its whiteouts removed lower
layers' files (only the whole staging tree can go), and a download that breaks off and resumes
from another mirror would have to restart the unpack. Applying each verified layer while the next
ones download gets most of the overlap without any of that: what is left on the critical path is
the first layer's download and the last layer's apply.

The rootfs appears only complete (`assemble.Unpacker`: a hidden sibling renamed into place); any
failure (a download, a verification, unsafe content, free space) removes it, stops the downloads
(their partial files stay in the store for a resume) and is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ocispec.manifest import Descriptor, ImageManifest
from ocispec.platform import Platform
from ocispec.reference import Reference

from .assemble import check_dest
from .progress import Emit, Event
from .pull import ClientFactory, Downloads, PullResult, record_image, resolve_checked, stored_up_to_date
from .space import Reserve
from .store import Store

if TYPE_CHECKING:
    from .assemble import Unpacker


def pull_rootfs(client_factory: ClientFactory, store: Store, ref: Reference, platform: Platform, jobs: int,
                emit: Emit, dest: Path, *, max_unpacked_bytes: int, bundle: bool, privileged: bool,
                keep_root_mode: bool = False, min_free: Reserve | None = None) -> PullResult:
    """Bring `ref` (for `platform`) into `store` and build its root filesystem (with `bundle`, an OCI
    runtime bundle) at `dest`; the unpack arguments and errors are `assemble.unpack_image`'s. Emits
    the fetch's events, `layer-applied` after each layer and `unpacked` at the end."""
    started = time.monotonic()
    key = str(ref)
    check_dest(dest)  # before downloading anything
    warn = lambda message: emit(Event("warning", {"message": message}))  # noqa: E731
    with store.using():
        client = client_factory()
        stored = stored_up_to_date(client, store, ref, platform, emit)
        if stored is not None:
            from .assemble import Unpacker

            record, manifest = stored
            with Unpacker(manifest, store.read_blob(manifest.config.digest), store.open_blob, dest,
                          max_unpacked_bytes=max_unpacked_bytes, bundle=bundle, warn=warn, privileged=privileged,
                          keep_root_mode=keep_root_mode, min_free=min_free) as unpacker:
                _apply_all(unpacker, manifest, emit, lambda layer: None)
                unpacker.complete()
            result = PullResult(key, record.digest, manifest, True, 0)
        else:
            resolved = resolve_checked(client, ref, platform, store, emit)
            manifest = resolved.manifest
            with Downloads(client, store, resolved, jobs, emit) as downloads:
                from .assemble import Unpacker  # loaded while the first blobs download

                downloads.wait(manifest.config.digest)
                with Unpacker(manifest, store.read_blob(manifest.config.digest), store.open_blob, dest,
                              max_unpacked_bytes=max_unpacked_bytes, bundle=bundle, warn=warn, privileged=privileged,
                              keep_root_mode=keep_root_mode, min_free=min_free) as unpacker:
                    _apply_all(unpacker, manifest, emit, lambda layer: downloads.wait(layer.digest))
                    downloaded = downloads.total()
                    # The image is recorded before the rootfs appears: a rootfs in place means the
                    # store has its image too.
                    desc = record_image(store, key, resolved)
                    emit(Event("done", {"reference": key, "digest": str(desc.digest), "downloaded": downloaded,
                                        "elapsed": round(time.monotonic() - started, 3)}))
                    unpacker.complete()
            result = PullResult(key, desc.digest, manifest, False, downloaded)
    emit(Event("unpacked", {"reference": key, "digest": str(result.digest), "path": str(unpacker.dest),
                            "elapsed": round(time.monotonic() - started, 3)}))
    return result


def _apply_all(unpacker: Unpacker, manifest: ImageManifest, emit: Emit, ready: Callable[[Descriptor], None]) -> None:
    """Apply every layer in order, each once `ready` (which waits for its download) returns."""
    total = len(manifest.layers)
    for index, layer in enumerate(manifest.layers, 1):
        ready(layer)
        unpacker.apply_next()
        emit(Event("layer-applied", {"digest": str(layer.digest), "index": index, "layers": total}))
