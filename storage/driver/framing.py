"""The one encoding of the states that hold bytes: JSON lines, each ended by a newline, then bytes.

An upload's state (storage.upload_state: its own line, the writer's line, the writer's tail) and
the S3 writer's sidecar (storage.driver.s3.sidecar: its line, the tail) are both this. The tail
may be most of a part (16 MiB by default), so it is read with one copy only, from the stream into
a bytearray of its exact size (`LineReader.rest`): a front-trimmed bytearray would be copied again
by its first append, and the writer that takes the tail over appends to it.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

#: Lines are read this much at a time: a header line is well under it.
_READ = 64 * 1024
#: The tail is read in pieces of this size (each a transient copy, then into the tail).
_REST_PIECE = 1024 * 1024
#: No line of a state is longer (an S3 writer's line lists its parts: 10,000 are under 1 MiB).
MAX_LINE = 4 * 1024 * 1024


def json_line(header: dict[str, Any]) -> bytes:
    """`header` as one compact JSON line, with its newline."""
    return json.dumps(header, separators=(",", ":")).encode() + b"\n"


class LineReader:
    """Reads JSON lines off the front of a stream of `size` bytes, then the rest (`rest`). Every
    failure to parse is a ValueError; a stream that ends before `size` is too."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._left = size  # bytes of the stream not read yet
        self._pending = bytearray()  # read, not yet consumed

    @property
    def at_end(self) -> bool:
        """Nothing is left: no further line, an empty rest."""
        return not self._pending and self._left <= 0

    def line(self) -> tuple[bytes, bool]:
        """The next line without its newline, and whether it had one (False: it ended the stream)."""
        start = 0
        while True:
            cut = self._pending.find(b"\n", start)
            if cut >= 0:
                line = bytes(self._pending[:cut])
                del self._pending[:cut + 1]  # small: the rest is taken by `rest` into a buffer of its own
                return line, True
            if len(self._pending) > MAX_LINE:
                raise ValueError(f"a line longer than {MAX_LINE} bytes")
            start = len(self._pending)
            if not self._fill(_READ):
                line = bytes(self._pending)
                self._pending.clear()
                return line, False

    def json_line(self) -> dict[str, Any]:
        """The next line as a JSON object (ValueError if it is none)."""
        line, _ = self.line()
        header = json.loads(line)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
        return header

    def rest(self) -> bytearray:
        """Everything after the lines read, in one bytearray of its exact size (one copy)."""
        rest = bytearray(len(self._pending) + max(self._left, 0))
        view = memoryview(rest)
        filled = len(self._pending)
        view[:filled] = self._pending
        self._pending = bytearray()
        while filled < len(rest):
            piece = self._stream.read(min(_REST_PIECE, len(rest) - filled))
            if not piece:
                raise ValueError(f"the state ended {len(rest) - filled} bytes early")
            view[filled:filled + len(piece)] = piece
            filled += len(piece)
        view.release()  # a bytearray with a view on it cannot grow: its new owner appends to it
        self._left = 0
        return rest

    def _fill(self, amount: int) -> bool:
        if self._left <= 0:
            return False
        piece = self._stream.read(min(amount, self._left))
        if not piece:
            raise ValueError(f"the state ended {self._left} bytes early")
        self._left -= len(piece)
        self._pending += piece
        return True
