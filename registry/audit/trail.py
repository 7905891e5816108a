"""The audit trail's `Listener`: each audited event as one line (registry.audit.entry) appended to
`audit.path` and, with `audit.storage`, to the `audit` journal in storage (storage.journal), both
before the request that caused it is answered (`Events.emit` waits for `record`).

The file is opened for each batch of events with O_APPEND and every line is one `write`, so any
number of worker processes, replicas on one host and commands (`registry gc`, `registry robot
create`) append to one file without tearing a line; the file is synced before `record` returns.
Opening it each time also means a rotation by renaming it (logrotate's default) needs no signal:
the next entry makes the file anew. In storage each `record` puts one batch: audited actions are
writes, never pulls, so that is one small object per change.

A sink that fails is logged as one line naming what was lost and never fails the request or the
job: the change has happened either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from storage import Journal, Storage, open_journal

from ..events import Event
from ..settings import AuditSettings
from .entry import AUDITED, entry_line

log = logging.getLogger("cargobay.audit")
JOURNAL = "audit"
FILE_MODE = 0o640  # who did what is for the operator's eyes


def append_lines(path: str, lines: Sequence[str]) -> None:
    """Append each line to `path` with one O_APPEND write, then sync the file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        for line in lines:
            data = memoryview(f"{line}\n".encode())
            while data:  # a regular file takes it whole; a short write (disk full) continues, then fails
                data = data[os.write(fd, data):]
        os.fdatasync(fd)
    finally:
        os.close(fd)


def check_file(path: str) -> None:
    """Raise OSError unless `path` can be appended to (`registry serve` checks at start)."""
    append_lines(path, [])


class AuditTrail:
    def __init__(self, path: str = "", journal: Journal | None = None) -> None:
        self.path = path
        self.journal = journal

    @classmethod
    def from_settings(cls, settings: AuditSettings, storage: Storage) -> AuditTrail:
        return cls(settings.path, open_journal(storage, JOURNAL) if settings.storage else None)

    def wants(self, action: str) -> bool:
        return action in AUDITED

    def record(self, events: Sequence[Event]) -> None:
        lines = [entry_line(event) for event in events]
        if self.path:
            try:
                append_lines(self.path, lines)
            except OSError as exc:
                self._lost(events, f"the audit file {self.path}", exc)
        if self.journal is not None:
            try:
                self.journal.append(lines)
            except Exception as exc:  # StorageError, or what a driver lets through: logged, never raised
                self._lost(events, "the audit journal in storage", exc)

    @staticmethod
    def _lost(events: Sequence[Event], where: str, exc: Exception) -> None:
        ids = ", ".join(f"{event.action} {event.id}" for event in events[:5])
        more = f" and {len(events) - 5} more" if len(events) > 5 else ""
        reason = " ".join(str(exc).split()) or type(exc).__name__
        log.error("could not append %d audit entries to %s (%s%s): %s", len(events), where, ids, more, reason)
