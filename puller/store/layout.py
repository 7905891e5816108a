"""The local content store: an OCI image layout that skopeo (`oci:DIR:REF`) and umoci read as is.

```
<root>/oci-layout                          {"imageLayoutVersion": "1.0.0"}
<root>/index.json                          one entry per image, annotated with its full reference
<root>/blobs/<alg>/<hex>                   every blob once, shared by all images
<root>/.puller/ingest/<alg>-<hex>          partial downloads (resumed by a later run)
<root>/.puller/tmp/                        small blobs being written (renamed into blobs/ when complete)
<root>/.puller/locks/                      flock files: one per blob being fetched, index, gc
```

Safety with several puller processes: a blob is downloaded under its own lock into its partial file
and appears under `blobs/` only by an atomic rename after its size and digest were checked, so a
blob that exists is complete. `index.json` is rewritten under the index lock by temp file + rename.
Commands that rely on blobs staying put hold the gc lock shared; `prune` takes it exclusively.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

from ocispec import mediatypes as mt
from ocispec.digest import Digest
from ocispec.errors import OCIValidationError
from ocispec.manifest import Descriptor, ImageIndex, ImageManifest, Manifest, parse_manifest
from ocispec.platform import Platform
from ocispec.reference import parse_reference

from ..errors import ClientError, NotFound, PullError, UsageError, VerificationError
from ..space import Reserve, SpaceGuard
from .ingest import Ingest, atomic_write, flock

REF_NAME = "org.opencontainers.image.ref.name"
#: What the reference's tag pointed at when fetched (an index digest for multi-platform images).
RESOLVED = "io.cargobay.puller.resolved"
CREATED = "org.opencontainers.image.created"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


class ImageSummary(TypedDict):
    """One row of `puller images`; `size` (manifest, config and layers) is None when unknown."""

    reference: str
    digest: str
    platform: str
    size: int | None
    created: str


@dataclass(frozen=True)
class ImageRecord:
    """One image in the store: an `index.json` entry."""

    reference: str
    descriptor: Descriptor

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    @property
    def resolved(self) -> str:
        return self.descriptor.annotations.get(RESOLVED, str(self.digest))

    @property
    def platform(self) -> Platform | None:
        return self.descriptor.platform


class Store:
    """The store at `root`. With `reserve`, downloads stop before its filesystem has less free space
    than that (InsufficientSpace; the partial download stays, to be resumed)."""

    def __init__(self, root: str | os.PathLike[str], reserve: Reserve | None = None) -> None:
        self.root = Path(root)
        self.space: SpaceGuard | None = None
        try:
            for sub in ("blobs/sha256", ".puller/ingest", ".puller/locks", ".puller/tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                atomic_write(self.root / "oci-layout", LAYOUT)
            if not (self.root / "index.json").exists():
                with self._index_lock():
                    if not (self.root / "index.json").exists():
                        self._write_index([])
        except PermissionError as exc:
            raise UsageError(f"store {self.root} is not writable: {exc}") from None
        if reserve is not None:
            self.space = SpaceGuard(self.root, reserve, "fetch")

    # -- locks -------------------------------------------------------------------------------
    def _lock_path(self, name: str) -> Path:
        return self.root / ".puller" / "locks" / name

    def _index_lock(self) -> contextlib.AbstractContextManager[None]:
        return flock(self._lock_path("index.lock"), fcntl.LOCK_EX)

    def using(self) -> contextlib.AbstractContextManager[None]:
        """Hold while relying on blobs (fetch, unpack, export): `prune` waits for it."""
        return flock(self._lock_path("gc.lock"), fcntl.LOCK_SH)

    # -- blobs -------------------------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        directory = self.root / "blobs" / digest.algorithm
        if digest.algorithm != "sha256":
            directory.mkdir(exist_ok=True)
        return directory / digest.hex

    def has_blob(self, desc: Descriptor) -> bool:
        try:
            return self.blob_path(desc.digest).stat().st_size == desc.size
        except FileNotFoundError:
            return False

    def open_blob(self, digest: Digest) -> BinaryIO:
        """A binary file object over a stored blob (verified when it was stored)."""
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the store {self.root}") from None

    def read_blob(self, digest: Digest, limit: int = 4 * 1024 * 1024) -> bytes:
        with self.open_blob(digest) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise VerificationError(f"blob {digest} is larger than {limit} bytes")
        return data

    def put_blob(self, data: bytes, digest: Digest) -> None:
        """Store small content (manifests, configs) already in memory, verifying it first."""
        if Digest.of(data, digest.algorithm) != digest:
            raise VerificationError(f"content does not match {digest}")
        path = self.blob_path(digest)
        if not path.exists():  # written outside blobs/, which other tools read as the layout it is
            atomic_write(path, data, self.root / ".puller" / "tmp")

    @contextlib.contextmanager
    def ingest(self, desc: Descriptor, on_wait: Callable[[], None] | None = None,
               cancel: threading.Event | None = None) -> Iterator[Ingest | None]:
        """Lock the blob and open its partial file; yields None when the blob is (by then) stored.
        A wait for another process's lock ends with errors.Cancelled once `cancel` is set."""
        with flock(self._lock_path(f"{desc.digest.algorithm}-{desc.digest.hex}.lock"), fcntl.LOCK_EX, on_wait,
                   cancel):
            if self.has_blob(desc):
                yield None
                return
            name = f"{desc.digest.algorithm}-{desc.digest.hex}"
            ingest = Ingest(self.root / ".puller" / "ingest" / name, self.blob_path(desc.digest), desc, self.space)
            try:
                yield ingest
            finally:
                ingest.close()

    # -- index.json --------------------------------------------------------------------------
    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        except ValueError as exc:
            raise PullError(f"{self.root}/index.json is corrupt: {exc}") from None
        manifests = data.get("manifests", []) if isinstance(data, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(e, dict) for e in manifests):
            raise PullError(f"{self.root}/index.json is corrupt: not an OCI index with a list of descriptors")
        index: dict[str, Any] = data
        return index

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        atomic_write(self.root / "index.json", json.dumps(body, indent=2).encode() + b"\n")

    def records(self) -> list[ImageRecord]:
        out = []
        for entry in self._read_index().get("manifests") or []:
            try:
                desc = Descriptor.from_json(entry)
            except OCIValidationError:
                continue
            out.append(ImageRecord(desc.annotations.get(REF_NAME, ""), desc))
        return out

    def find(self, text: str) -> ImageRecord:
        """The image stored under reference `text` (normalised like Docker), or by manifest digest
        (`sha256:…` or a unique hex prefix of at least 12 characters)."""
        records = self.records()
        wanted: str | None = None
        with contextlib.suppress(OCIValidationError):
            wanted = str(parse_reference(text))
        for record in records:
            if record.reference in (text, wanted):
                return record
        hexpart = text.split(":", 1)[1] if text.startswith("sha256:") else text
        if len(hexpart) >= 12 and all(c in "0123456789abcdef" for c in hexpart):
            matches = [r for r in records if r.digest.hex.startswith(hexpart)]
            if len({r.digest for r in matches}) == 1:
                return matches[0]
        raise NotFound(f"{text}: no such image in the store")

    def set_image(self, reference: str, desc: Descriptor, resolved: Digest, created: str | None = None) -> None:
        """Point `reference` at image manifest `desc` (which must be stored, with all its blobs)."""
        annotations = {REF_NAME: reference, RESOLVED: str(resolved)}
        if created:
            annotations[CREATED] = created
        entry = Descriptor(desc.media_type, desc.digest, desc.size, annotations=annotations,
                           platform=desc.platform).to_json()
        with self._index_lock():
            entries = [e for e in self._read_index().get("manifests") or []
                       if (e.get("annotations") or {}).get(REF_NAME) != reference]
            entries.append(entry)
            self._write_index(entries)

    def remove(self, reference: str) -> ImageRecord:
        record = self.find(reference)
        with self._index_lock():
            entries = [e for e in self._read_index().get("manifests") or []
                       if (e.get("annotations") or {}).get(REF_NAME) != record.reference]
            self._write_index(entries)
        return record

    # -- images ------------------------------------------------------------------------------
    def manifest(self, digest: Digest) -> Manifest:
        try:
            return parse_manifest(self.read_blob(digest))
        except OCIValidationError as exc:
            raise VerificationError(f"stored manifest {digest}: {exc.message}") from None

    def image(self, reference: str) -> tuple[ImageRecord, ImageManifest, bytes]:
        """The stored image `reference`: its record, manifest and config bytes."""
        record = self.find(reference)
        manifest = self.manifest(record.digest)
        if not isinstance(manifest, ImageManifest):
            raise PullError(f"{reference} is an index, not an image manifest")
        return record, manifest, self.read_blob(manifest.config.digest)

    def summaries(self) -> list[ImageSummary]:
        """One row per image for `puller images`: reference, digest, platform, size, created."""
        rows: list[ImageSummary] = []
        for record in self.records():
            size: int | None = None
            with contextlib.suppress(ClientError):
                manifest = self.manifest(record.digest)
                size = record.descriptor.size + sum(
                    d.size for d in (manifest.blobs() if isinstance(manifest, ImageManifest) else ()))
            rows.append(ImageSummary(reference=record.reference, digest=str(record.digest),
                                     platform=str(record.platform) if record.platform else "", size=size,
                                     created=record.descriptor.annotations.get(CREATED, "")))
        return sorted(rows, key=lambda r: r["reference"])

    def inspect(self, reference: str) -> dict[str, Any]:
        """What `puller inspect` shows: the record, layers, and the manifest and config as JSON."""
        record, manifest, config = self.image(reference)
        try:
            config_obj: Any = json.loads(config)
        except (ValueError, UnicodeDecodeError):
            config_obj = None
        return {
            "reference": record.reference, "digest": str(record.digest), "resolved": record.resolved,
            "mediaType": manifest.media_type, "platform": str(record.platform) if record.platform else None,
            "created": record.descriptor.annotations.get(CREATED),
            "size": sum(d.size for d in manifest.blobs()) + len(manifest.raw),
            "layers": [d.to_json() for d in manifest.layers],
            "manifest": json.loads(manifest.raw), "config": config_obj,
        }

    def check_space(self, descs: list[Descriptor]) -> None:
        """InsufficientSpace when downloading what is missing of `descs` (less what partial files
        already hold) would leave less than the reserve free."""
        if self.space is None:
            return
        missing = 0
        for desc in {d.digest: d for d in descs}.values():
            if not self.has_blob(desc):
                partial = self.root / ".puller" / "ingest" / f"{desc.digest.algorithm}-{desc.digest.hex}"
                try:
                    missing += max(desc.size - partial.stat().st_size, 0)
                except FileNotFoundError:
                    missing += desc.size
        self.space.check(missing)

    def is_complete(self, manifest: ImageManifest) -> bool:
        return all(self.has_blob(d) for d in manifest.blobs())

    def _referenced(self) -> set[Digest]:
        keep: set[Digest] = set()
        todo = [r.digest for r in self.records()]
        while todo:
            digest = todo.pop()
            if digest in keep:
                continue
            keep.add(digest)
            try:
                manifest = parse_manifest(self.read_blob(digest))
            except (NotFound, VerificationError, OCIValidationError):
                continue
            if isinstance(manifest, ImageIndex):
                todo += [d.digest for d in manifest.manifests]
            else:
                keep.update(d.digest for d in manifest.blobs())
                if manifest.subject:
                    keep.add(manifest.subject.digest)
        return keep

    def prune(self) -> tuple[int, int]:
        """Delete blobs no image references and abandoned partial downloads: (files, bytes)."""
        count = size = 0
        with flock(self._lock_path("gc.lock"), fcntl.LOCK_EX):
            keep = self._referenced()
            for alg_dir in (self.root / "blobs").iterdir():
                for path in alg_dir.iterdir():
                    with contextlib.suppress(OCIValidationError):
                        if Digest.parse(f"{alg_dir.name}:{path.name}") in keep:
                            continue
                    if path.is_file():
                        size += path.stat().st_size
                        path.unlink()
                        count += 1
            for leftovers in ("ingest", "tmp"):
                for path in (self.root / ".puller" / leftovers).iterdir():
                    size += path.stat().st_size
                    path.unlink()
                    count += 1
        return count, size

