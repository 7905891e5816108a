"""The local content store: an OCI image layout that skopeo (`oci:DIR:REF`) and umoci read as is.

```
<root>/oci-layout                          {"imageLayoutVersion": "1.0.0"}
<root>/index.json                          one entry per image, annotated with its full reference
<root>/blobs/<alg>/<hex>                   every blob once, shared by all images
<root>/.puller/ingest/<alg>-<hex>          partial downloads (resumed by a later run)
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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from ocispec import mediatypes as mt
from ocispec.digest import Digest, SizeExceeded
from ocispec.errors import OCIValidationError
from ocispec.manifest import Descriptor, ImageIndex, ImageManifest, Manifest, parse_manifest
from ocispec.platform import Platform
from ocispec.reference import parse_reference

from .errors import NotFound, PullError, UsageError, VerificationError

REF_NAME = "org.opencontainers.image.ref.name"
#: What the reference's tag pointed at when fetched (an index digest for multi-platform images).
RESOLVED = "io.cargobay.puller.resolved"
CREATED = "org.opencontainers.image.created"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def _fsync_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same directory, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _flock(path: Path, mode: int, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


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


class Ingest:
    """A partial download of one blob, held under that blob's lock. Hashes as it writes (re-hashing
    what an earlier, interrupted run left), refuses bytes beyond the descriptor's size."""

    def __init__(self, store: "Store", desc: Descriptor) -> None:
        self.desc = desc
        self.path = store.root / ".puller" / "ingest" / f"{desc.digest.algorithm}-{desc.digest.hex}"
        self._store = store
        self._file: BinaryIO = open(self.path, "a+b")
        self._hasher = desc.digest.hasher()
        self._offset = 0
        self._file.seek(0)
        while chunk := self._file.read(1 << 20):
            self._hasher.update(chunk)
            self._offset += len(chunk)
        if self._offset > desc.size:
            self.reset()
        self.resumed_from = self._offset

    @property
    def offset(self) -> int:
        return self._offset

    def write(self, data: bytes) -> None:
        if self._offset + len(data) > self.desc.size:
            raise SizeExceeded(f"{self.desc.digest}: more than the expected {self.desc.size} bytes")
        self._file.write(data)
        self._hasher.update(data)
        self._offset += len(data)

    def reset(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._hasher = self.desc.digest.hasher()
        self._offset = 0

    def commit(self) -> None:
        """Verify size and digest, then move the blob into place. On a mismatch the partial file is
        dropped and VerificationError raised."""
        self._file.flush()
        actual = self._hasher.hexdigest()
        if self._offset != self.desc.size or actual != self.desc.digest.hex:
            self.reset()
            raise VerificationError(
                f"{self.desc.digest}: verification failed: got {self._offset} bytes with digest "
                f"{self.desc.digest.algorithm}:{actual}, expected {self.desc.size} bytes")
        os.fsync(self._file.fileno())
        os.chmod(self.path, 0o644)
        os.replace(self.path, self._store.blob_path(self.desc.digest))

    def close(self) -> None:
        self._file.close()


class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            for sub in ("blobs/sha256", ".puller/ingest", ".puller/locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                _fsync_write(self.root / "oci-layout", LAYOUT)
            if not (self.root / "index.json").exists():
                with self._index_lock():
                    if not (self.root / "index.json").exists():
                        self._write_index([])
        except PermissionError as exc:
            raise UsageError(f"store {self.root} is not writable: {exc}") from None

    # -- locks -------------------------------------------------------------------------------
    def _lock_path(self, name: str) -> Path:
        return self.root / ".puller" / "locks" / name

    def _index_lock(self) -> contextlib.AbstractContextManager[None]:
        return _flock(self._lock_path("index.lock"), fcntl.LOCK_EX)

    def using(self) -> contextlib.AbstractContextManager[None]:
        """Hold while relying on blobs (fetch, unpack, export): `prune` waits for it."""
        return _flock(self._lock_path("gc.lock"), fcntl.LOCK_SH)

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
        if not path.exists():
            _fsync_write(path, data)

    @contextlib.contextmanager
    def ingest(self, desc: Descriptor, on_wait: Callable[[], None] | None = None) -> Iterator[Ingest | None]:
        """Lock the blob and open its partial file; yields None when the blob is (by then) stored."""
        with _flock(self._lock_path(f"{desc.digest.algorithm}-{desc.digest.hex}.lock"), fcntl.LOCK_EX, on_wait):
            if self.has_blob(desc):
                yield None
                return
            ingest = Ingest(self, desc)
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
        return data if isinstance(data, dict) else {"schemaVersion": 2, "manifests": []}

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        _fsync_write(self.root / "index.json", json.dumps(body, indent=2).encode() + b"\n")

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
        with _flock(self._lock_path("gc.lock"), fcntl.LOCK_EX):
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
            for path in (self.root / ".puller" / "ingest").iterdir():
                size += path.stat().st_size
                path.unlink()
                count += 1
        return count, size

