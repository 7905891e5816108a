"""An upload's state object (`_uploads/<id>/startedat`, storage.paths): which repository started
the upload and when and, on a driver whose appending writers hand their state to the caller
(`DriverCapabilities.external_writer_state`: S3), where the upload stands: its size, the session
that wrote it last and the writer's state (the multipart upload, its parts, the bytes not yet a
part). Then each step of an upload reads this one object, and a PATCH writes it once, instead of
also reading, writing and deleting a sidecar of the driver's own beside its data.

Format 2 (this version), JSON lines then bytes (storage.driver.framing):

    {"v":2,"repository":…,"startedat":…}                                      files: the data file is the rest
    {"v":2,"repository":…,"startedat":…,"size":…,"token":…}
    <the writer's header line: {} until something was written>
    <the writer's tail>                                                       S3

The first line (`UploadHeader`) is where the upload stands: status, cancel and the purge read it
alone, with a ranged read. `token` is random, written by the session that wrote the state (null:
no PATCH has): storage.uploads uses a running hash only for the state its session wrote. On S3 the
writer's line is always there, even before a PATCH, so that a version reading the state as one
JSON object (before format 2) refuses the upload instead of continuing it in a sidecar beside it
that this version would not read (docs/s3.md, "Upgrading"); on disk both versions continue the
data file alike, and the state stays one JSON object. Each PATCH that wrote bytes replaces the
state whole (one atomic put) after its writer closed: a crash before leaves the previous state,
which does not list what that PATCH sent, so the upload resumes at the last size reported.

Format 1 (`{"repository": …, "startedat": …}` alone: no "v") is what versions before this one
wrote: the driver keeps the writer's state itself (on S3 its sidecar), and such an upload is
continued that way. A state this version cannot read (damaged, or a newer format) is a ValueError.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from .driver.base import StorageDriver, WriterState
from .driver.framing import LineReader, json_line

FORMAT = 2
#: How much of a state object is read for its first line (a ranged read), which is well under it.
FIRST_LINE_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class UploadHeader:
    """Where an upload stands: its state's first line (module docstring)."""

    #: The repository that started it, None in a state that does not say (older than the field).
    repository: str | None
    started_at: float
    #: Bytes received so far, where the state holds the writer's (S3); None where the driver's data
    #: object tells (files, and uploads of format 1).
    size: int | None = None
    #: The session that wrote the state last (storage.uploads); None: no PATCH has written it.
    token: str | None = None
    version: int = FORMAT

    @property
    def holds_writer(self) -> bool:
        """Whether the writer's state follows (else the driver keeps its own)."""
        return self.size is not None

    def line(self) -> bytes:
        header: dict[str, Any] = {"v": self.version, "repository": self.repository, "startedat": self.started_at}
        if self.size is not None:
            header.update(size=self.size, token=self.token)
        return json_line(header)


@dataclass(slots=True)
class SavedUpload:
    """An upload's whole state: where it stands and, where the state holds it, the writer's."""

    header: UploadHeader
    #: What `driver.writer(data key, append=True, saved=...)` continues from; None where the driver
    #: keeps the writer's state itself (files, and uploads of format 1).
    writer: WriterState | None

    @classmethod
    def new(cls, repository: str, started_at: float, external_writer_state: bool) -> SavedUpload:
        if external_writer_state:
            return cls(UploadHeader(repository, started_at, 0), WriterState())
        return cls(UploadHeader(repository, started_at), None)

    def encode(self) -> bytes | bytearray:
        """The state object's bytes. The writer's tail becomes the body itself, its lines put in
        front in place (no copy of what may be most of a part): the tail is spent."""
        if self.writer is None:
            return self.header.line()
        body = self.writer.tail
        body[:0] = self.header.line() + json_line(self.writer.header)
        self.writer.tail = bytearray()
        return body


def load_upload_header(driver: StorageDriver, key: str) -> UploadHeader:
    """The first line of the state at `key`, from a ranged read of its start (PathNotFound when
    there is none, ValueError when it cannot be read)."""
    raw = driver.get(key, FIRST_LINE_MAX)
    return _header(LineReader(io.BytesIO(raw), len(raw)))


def load_saved_upload(driver: StorageDriver, key: str) -> SavedUpload:
    """The whole state at `key`, its tail read with one copy (PathNotFound when there is none,
    ValueError when it cannot be read)."""
    stream, size = driver.opened(key)
    with stream:
        framed = LineReader(stream, size)
        header = _header(framed)
        if not header.holds_writer:
            return SavedUpload(header, None)
        writer_header = framed.json_line()
        return SavedUpload(header, WriterState(writer_header, framed.rest()))


def _header(framed: LineReader) -> UploadHeader:
    header = framed.json_line()
    try:
        version = header.get("v", 1)
        if version not in (1, FORMAT):
            raise ValueError(f"format {version!r} (written by a newer version?)")
        named = header.get("repository")
        repository = None if named is None else str(named)
        started = float(header.get("startedat", 0))
        if version == 1 or header.get("size") is None:
            return UploadHeader(repository, started, version=version)
        size = int(header["size"])
        token = header.get("token")
        if size < 0 or (token is not None and not isinstance(token, str)):
            raise ValueError("a size or token that cannot be")
    except (TypeError, KeyError) as exc:
        raise ValueError(f"unreadable upload state: {exc}") from None
    return UploadHeader(repository, started, size, token, version)
