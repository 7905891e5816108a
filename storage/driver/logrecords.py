"""The write-ahead log's records (storage.driver.fslog): a change to a key (`P` put with its
content, `D` delete, `X` placed), encoded in a record that carries its epoch and a CRC of both, and
the records of an epoch read back in order, up to the first that is not one (torn, of an older
epoch, or zeros: where the log ends)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_RECORD = struct.Struct("<4sIQI")  # b"CBR1", crc32 of the rest, epoch, body length
RECORD_SIZE = _RECORD.size
_RECORD_MAGIC = b"CBR1"
_OP = struct.Struct("<cI")  # op, key length
_LENGTH = struct.Struct("<I")

PUT, DELETE, PLACED = b"P", b"D", b"X"


@dataclass(frozen=True, slots=True)
class Change:
    """One record's change to one key: `content` for a put, None otherwise."""

    op: bytes
    key: str
    content: bytes | None = None


def encode(changes: Sequence[Change]) -> bytes:
    parts: list[bytes] = []
    for change in changes:
        key = change.key.encode()
        parts.append(_OP.pack(change.op, len(key)))
        parts.append(key)
        if change.op == PUT:
            content = change.content or b""
            parts.append(_LENGTH.pack(len(content)))
            parts.append(content)
    return b"".join(parts)


def decode(body: bytes) -> Iterator[Change]:
    at = 0
    while at < len(body):
        op, key_length = _OP.unpack_from(body, at)
        at += _OP.size
        key = body[at:at + key_length].decode()
        at += key_length
        if op == PUT:
            (length,) = _LENGTH.unpack_from(body, at)
            at += _LENGTH.size
            yield Change(op, key, body[at:at + length])
            at += length
        else:
            yield Change(op, key)


def record(epoch: int, body: bytes) -> bytes:
    rest = struct.pack("<QI", epoch, len(body))
    return _RECORD.pack(_RECORD_MAGIC, zlib.crc32(body, zlib.crc32(rest)), epoch, len(body)) + body


def records(log: bytes, epoch: int, start: int) -> Iterator[tuple[int, bytes]]:
    """Where each record of `epoch` starts and its body, in order, up to the first that is not
    one (torn, of an older epoch, or zeros)."""
    at = start
    while at + _RECORD.size <= len(log):
        magic, crc, record_epoch, length = _RECORD.unpack_from(log, at)
        body = log[at + _RECORD.size:at + _RECORD.size + length]
        if magic != _RECORD_MAGIC or record_epoch != epoch or len(body) != length:
            return
        if zlib.crc32(body, zlib.crc32(struct.pack("<QI", record_epoch, length))) != crc:
            return
        yield at, body
        at += _RECORD.size + length
