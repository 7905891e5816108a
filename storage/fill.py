"""A verified streaming write of one blob whose digest is known up front (`RepositoryBlobs.fill`):
what a pull-through cache does with a blob it streams from an upstream to a client.

It is an upload of this repository (storage.uploads) driven by one writer: the bytes go to
`_uploads/<id>/data`, which nothing serves, and `commit` is `UploadStore.complete` (size and digest
verified, moved into the CAS, linked). So nothing becomes visible before the digest is verified,
it works on every driver, and a fill a killed process left behind is an old upload that the upload
purge removes. One thread drives a fill; it is not safe for concurrent use.

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

from ocispec.digest import Digest

from .errors import SizeInvalid, UploadInvalid, UploadUnknown

if TYPE_CHECKING:  # handed in by RepositoryBlobs, which uploads imports
    from .blobs import BlobInfo
    from .uploads import UploadSession, UploadStore


class BlobFill:
    """Write the blob's bytes (`write`), start over (`reset`), then `commit` or `abort`.

    `size` (when known) bounds the writes: a byte beyond it raises SizeInvalid at once (nothing
    of that chunk is written), so a source sending more than it announced cannot fill the disk.
    A failed `commit` leaves nothing behind; `reset` may then start over. Once `commit` succeeded
    or `abort` ran, the fill is finished: `abort` again does nothing, anything else raises
    UploadInvalid."""

    def __init__(self, uploads: UploadStore, repository: str, digest: Digest, size: int | None = None) -> None:
        if size is not None and size < 0:
            raise SizeInvalid(f"blob size must not be negative, got {size}")
        self._uploads = uploads
        self.repository = repository
        self.digest = digest
        self.size = size
        #: The upload being written (its id) and the session appending to it; None after a commit's
        #: close (the upload is then `complete`'s) or a discard.
        self._upload_id: str | None = None
        self._session: UploadSession | None = None
        self._finished = False
        self._start()

    @property
    def offset(self) -> int:
        """How many bytes were written since the fill started (or was last reset)."""
        return self._session.size if self._session is not None else 0

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        session = self._open_session()
        if self.size is not None and session.size + len(chunk) > self.size:
            raise SizeInvalid(f"blob {self.digest} is {self.size} bytes, but more were written",
                              digest=str(self.digest), size=self.size)
        session.write(chunk)

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
        before `commit` makes them durable and visible (which verifies again regardless). False also
        when there is no running hash to tell by (a digest of another algorithm)."""
        session = self._open_session()
        if self.size is not None and session.size != self.size:
            return False
        return session.digest(self.digest.algorithm) == self.digest

    def commit(self) -> BlobInfo:
        """Verify the bytes against `size` and `digest`, store them in the CAS (once, whatever
        repository has them already) and link them into this repository. On a mismatch nothing
        becomes visible, the bytes are removed and SizeInvalid or DigestInvalid is raised."""
        session = self._open_session()
        session.close()
        self._session = None  # closed: from here on the upload is complete's to keep or remove
        info = self._uploads.complete(self.repository, session.upload_id, self.digest, self.size)
        self._upload_id = None
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
        status = self._uploads.start(self.repository)
        self._upload_id = status.id
        self._session = self._uploads.open_session(self.repository, status.id, expected_offset=0)

    def _open_session(self) -> UploadSession:
        if self._finished or self._session is None:
            raise UploadInvalid(f"the fill of {self.digest} is already committed or aborted")
        return self._session

    def _discard(self) -> None:
        session, upload_id = self._session, self._upload_id
        self._session = self._upload_id = None
        if session is not None:
            session.abort()
        if upload_id is not None:
            try:
                self._uploads.cancel(self.repository, upload_id)
            except UploadUnknown:
                pass  # a failed commit (or the purge) removed it already
