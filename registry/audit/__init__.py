"""The audit trail (docs/operations.md): every change and every decision about access as one
append-only JSON line, in a file (`audit.path`) and in storage (`audit.storage`), and
`registry audit` to read it back.

- `entry`: what an event becomes in the trail, and the readable line of an entry.
- `trail`: `AuditTrail`, the events `Listener` (registry.operations installs it), and the file's appends.
- `query` and `cli`: `registry audit`.

The front door loads only the command's parser at import (every `registry` command builds it); the
rest loads on first use (PEP 562), so `registry gc` pays nothing for the trail it does not write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cli import add_command, run

if TYPE_CHECKING:
    from .entry import AUDITED
    from .trail import JOURNAL, AuditTrail, check_file

__all__ = ["AUDITED", "JOURNAL", "AuditTrail", "add_command", "check_file", "run"]


def __getattr__(name: str) -> Any:
    if name == "AUDITED":
        from .entry import AUDITED

        return AUDITED
    if name in ("JOURNAL", "AuditTrail", "check_file"):
        from . import trail

        return getattr(trail, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
