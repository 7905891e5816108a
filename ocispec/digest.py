"""Content digests (`sha256:<hex>`, `sha512:<hex>`) and a reader that verifies one as bytes stream.

The grammar is the image-spec's: `algorithm ":" encoded`. Only registered algorithms with their exact
lower-case hex length are accepted, so a digest can be used safely as a path component.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from .errors import ErrorCode, OCIValidationError

# Registered algorithms and the length of their lower-case hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
DEFAULT_ALGORITHM = "sha256"

_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


class DigestMismatch(OCIValidationError):
    """Bytes whose digest or size is not the one they were announced with."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.DIGEST_INVALID, message)


class SizeExceeded(DigestMismatch):
    """More bytes arrived than the descriptor allows."""


_LOWER_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated content digest. `str(d)` is the canonical `alg:hex` form."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate; raises OCIValidationError(DIGEST_INVALID) on anything else."""
        if not isinstance(text, str) or len(text) > 256 or not _GRAMMAR.fullmatch(text):
            raise OCIValidationError(ErrorCode.DIGEST_INVALID, f"invalid digest {str(text)[:80]!r}")
        algorithm, _, encoded = text.partition(":")
        expected_len = ALGORITHMS.get(algorithm)
        if expected_len is None:
            raise OCIValidationError(ErrorCode.DIGEST_INVALID, f"unsupported digest algorithm {algorithm!r}")
        if len(encoded) != expected_len or not _LOWER_HEX.fullmatch(encoded):
            raise OCIValidationError(ErrorCode.DIGEST_INVALID, f"invalid {algorithm} digest {text[:80]!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview, algorithm: str = DEFAULT_ALGORITHM) -> Digest:
        """The digest of `data`."""
        h = new_hasher(algorithm)
        h.update(data)
        return cls(algorithm, h.hexdigest())

    @classmethod
    def from_hasher(cls, algorithm: str, hasher: Hasher) -> Digest:
        return cls(algorithm, hasher.hexdigest())

    def hasher(self) -> Hasher:
        """A fresh hasher of this digest's algorithm."""
        return new_hasher(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def new_hasher(algorithm: str) -> Hasher:
    if algorithm not in ALGORITHMS:
        raise OCIValidationError(ErrorCode.DIGEST_INVALID, f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


class VerifyingReader:
    """Wraps a binary stream; hashes what is read and checks size and digest at EOF.

    Reading past `size` bytes raises SizeExceeded at once (never buffers the excess); reaching EOF
    with the wrong size or digest raises DigestMismatch. `verified` becomes True only after EOF was
    reached and everything matched.
    """

    def __init__(self, raw: BinaryIO, digest: Digest, size: int | None = None) -> None:
        self._raw = raw
        self._digest = digest
        self._size = size
        self._hasher = digest.hasher()
        self._count = 0
        self.verified = False

    @property
    def bytes_read(self) -> int:
        return self._count

    def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if self._size is not None and n is not None and n >= 0:
            # Ask for one byte beyond the limit at most, enough to notice an overlong stream.
            n = min(n, self._size - self._count + 1)
            if n == 0:
                n = 1
        chunk = self._raw.read(n)
        if chunk:
            self._count += len(chunk)
            if self._size is not None and self._count > self._size:
                raise SizeExceeded(f"{self._digest}: more than the expected {self._size} bytes")
            self._hasher.update(chunk)
            return chunk
        self._finish()
        return b""

    def _finish(self) -> None:
        if self.verified:
            return
        if self._size is not None and self._count != self._size:
            raise DigestMismatch(f"{self._digest}: got {self._count} bytes, expected {self._size}")
        actual = self._hasher.hexdigest()
        if actual != self._digest.hex:
            raise DigestMismatch(f"digest mismatch: expected {self._digest}, got {self._digest.algorithm}:{actual}")
        self.verified = True

    def close(self) -> None:
        self._raw.close()
