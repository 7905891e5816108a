"""A verified streaming write of one blob whose digest is known up front (`RepositoryBlobs.fill`):
what a monolithic upload does (the registry's POST ?digest=, or a PUT with the whole body) and what
a pull-through cache does with a blob it streams from an upstream to a client.

The bytes go straight to their place in the CAS through the driver's atomic writer
(`StorageDriver.atomic_writer`: on S3 one PUT when they fit a part, else a multipart upload on the
blob's key; on disk a temp file renamed onto it), hashed as they pass; `commit` verifies size and
digest first and only then makes them appear there, and links them. So nothing becomes visible
before the digest is verified, nothing is written twice (no upload state, no second copy), and what
a killed process leaves is invisible debris the temp sweep removes (`remove_stale_temp`). One
thread drives a fill; it is not safe for concurrent use.

    fill = repository.blobs.fill(digest, size)
    try:
        for chunk in upstream:
            fill.write(chunk)
        fill.commit()
    finally:
        fill.abort()  # a no-op after a successful commit
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from ocispec.digest import Digest, Hasher, new_hasher

from . import paths
from .driver.base import AtomicWriter
from .errors import DigestInvalid, SizeInvalid, UploadInvalid

if TYPE_CHECKING:  # handed in by RepositoryBlobs, which imports this module
    from .blobs import BlobInfo, RepositoryBlobs


class BlobFill:
    """Write the blob's bytes (`write`), start over (`reset`), then `commit` or `abort`.

    `size` (when known) bounds the writes: a byte beyond it raises SizeInvalid at once (nothing
    of that chunk is written), so a source sending more than it announced cannot fill the disk.
    A failed `commit` leaves nothing behind; `reset` may then start over. Once `commit` succeeded
    or `abort` ran, the fill is finished: `abort` again does nothing, anything else raises
    UploadInvalid."""

    def __init__(self, blobs: RepositoryBlobs, digest: Digest, size: int | None = None) -> None:
        if size is not None and size < 0:
            raise SizeInvalid(f"blob size must not be negative, got {size}")
        self._blobs = blobs
        self.repository = blobs.name
        self.digest = digest
        self.size = size
        #: The write in progress and the hash of its bytes; None once committed or discarded.
        self._writer: AtomicWriter | None = None
        self._hasher: Hasher = new_hasher(digest.algorithm)
        self._finished = False
        self._start()

    @property
    def offset(self) -> int:
        """How many bytes were written since the fill started (or was last reset)."""
        return self._writer.size if self._writer is not None else 0

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        writer = self._open_writer()
        if self.size is not None and writer.size + len(chunk) > self.size:
            raise SizeInvalid(f"blob {self.digest} is {self.size} bytes, but more were written",
                              digest=str(self.digest), size=self.size)
        writer.write(chunk)
        self._hasher.update(chunk)

    def reset(self) -> None:
        """Drop every byte written and start over at offset 0 (e.g. the source broke off and
        cannot resume, or a commit found the wrong bytes and another source is tried)."""
        if self._finished:
            raise UploadInvalid(f"the fill of {self.digest} is already committed or aborted")
        self._discard()
        self._start()

    def matches(self) -> bool:
        """Whether the bytes written so far are the blob (its size when known, its digest from the
        running hash), storing nothing: what a caller streaming the bytes on may tell its reader
        before `commit` makes them durable and visible (which verifies again regardless)."""
        writer = self._open_writer()
        if self.size is not None and writer.size != self.size:
            return False
        return Digest.from_hasher(self.digest.algorithm, self._hasher) == self.digest

    def commit(self) -> BlobInfo:
        """Verify the bytes against `size` and `digest`, store them in the CAS (once, whatever
        repository has them already) and link them into this repository. On a mismatch nothing
        becomes visible, the bytes are removed and SizeInvalid or DigestInvalid is raised."""
        writer = self._open_writer()
        size = writer.size
        try:
            if self.size is not None and size != self.size:
                raise SizeInvalid(f"blob {self.digest} is {self.size} bytes, {size} were written",
                                  digest=str(self.digest), size=self.size)
            actual = Digest.from_hasher(self.digest.algorithm, self._hasher)
            if actual != self.digest:
                raise DigestInvalid(f"digest mismatch: expected {self.digest}, got {actual}", digest=str(self.digest))
        except (SizeInvalid, DigestInvalid):
            self._discard()
            raise
        self._writer = None  # from here on this method commits or cancels it
        try:
            info = self._blobs.link_verified(self.digest, size, writer.commit, writer.cancel)
        finally:
            writer.cancel()  # a no-op once committed
        self._finished = True
        return info

    def abort(self) -> None:
        """Remove what was written; nothing became visible. Safe to call at any point and more than
        once: after a commit (or a failed one, which removed the bytes already) it does nothing."""
        self._finished = True
        self._discard()

    def __enter__(self) -> BlobFill:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()  # after a commit a no-op; on an error, nothing is left behind

    # -- internals -------------------------------------------------------------------------------
    def _start(self) -> None:
        self._writer = self._blobs.driver.atomic_writer(paths.blob_data(self.digest))
        self._hasher = new_hasher(self.digest.algorithm)

    def _open_writer(self) -> AtomicWriter:
        if self._finished or self._writer is None:
            raise UploadInvalid(f"the fill of {self.digest} is already committed or aborted")
        return self._writer

    def _discard(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
