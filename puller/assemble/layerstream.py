"""One layer blob as the decompressed tar stream that unpacking reads, verified on the way.

A background thread reads the blob through a `VerifyingReader` (the compressed digest and size),
decompresses it, hashes the result for the diff_id and charges every byte to the unpack budget,
handing 1 MiB chunks over a small bounded queue. zlib, zstd and hashlib release the GIL, so this
overlaps with the main thread's file creation instead of adding to it; memory stays at a few MiB
whatever the layer size. Errors (a digest mismatch, corrupt compressed data, the budget) surface in
the reader at the point of the stream where they happened.
"""

from __future__ import annotations

import queue
import sys
import threading
import zlib
from typing import Any, BinaryIO

from ocispec.digest import Digest, DigestMismatch, VerifyingReader
from ocispec.manifest import Descriptor
from ocispec.mediatypes import layer_compression

from ..errors import PullError, UnsafeContent, VerificationError
from ..space import SpaceGuard

CHUNK = 1 << 20
QUEUE_CHUNKS = 8
#: No single read of a tar header (PAX records, GNU long names) may ask for more than this.
MAX_HEADER_READ = 16 << 20

_DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (EOFError, zlib.error)


def decompression_errors() -> tuple[type[BaseException], ...]:
    """What a corrupt compressed stream raises while being read. zstandard is imported only for a
    zstd layer (most images have none), and its error can only come once it was."""
    zstd = sys.modules.get("zstandard")
    return (*_DECOMPRESSION_ERRORS, zstd.ZstdError) if zstd is not None else _DECOMPRESSION_ERRORS


class Budget:
    """The unpacked-bytes limit shared by all layers of one image (thread-safe); with `space`, the
    same bytes are charged to the target filesystem's free-space guard."""

    def __init__(self, limit: int, space: SpaceGuard | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.space = space
        self._lock = threading.Lock()

    def charge(self, n: int) -> None:
        with self._lock:
            self.used += n
            over = self.used > self.limit
        if over:
            raise UnsafeContent(f"the image unpacks to more than the limit of {self.limit} bytes")
        if self.space is not None:
            self.space.charge(n)


class Gunzip:
    """The decompressed bytes of a gzip stream, as `gzip.GzipFile` reads it (members one after the
    other, zero padding after a member skipped, anything else after one refused), but inflated by
    zlib in C with the header and the trailer (CRC-32 and size) checked there: `GzipFile` adds a
    Python-level pass and copies that cost ~40 % of the decompression time of a large layer. zlib
    is the stricter on headers: reserved flag bits or a wrong header CRC are refused, as RFC 1952
    asks (GzipFile ignores them)."""

    GZIP = 16 + zlib.MAX_WBITS  # a gzip wrapper, not zlib's own

    def __init__(self, raw: BinaryIO | VerifyingReader) -> None:
        self._raw = raw
        self._inflate: Any = None  # the member being read, None between members
        self._input = b""  # compressed bytes read but not yet given to zlib
        self._members = 0  # read to their end
        self._done = False
        self._out, self._off = b"", 0  # output not yet returned

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (at least one unless at the end), b"" at the end."""
        if n == 0:
            return b""
        while self._off >= len(self._out):
            self._out, self._off = self._inflate_some(), 0
            if not self._out:
                return b""
        if self._off == 0 and (n is None or n < 0 or n >= len(self._out)):
            self._off = len(self._out)
            return self._out  # the whole piece: no copy
        end = len(self._out) if n is None or n < 0 else self._off + n
        data = self._out[self._off:end]
        self._off += len(data)
        return data

    def _inflate_some(self) -> bytes:
        """The next piece of output (up to CHUNK bytes; zlib is asked for no more, so that a highly
        compressed member never makes one large piece), b"" at the end."""
        while not self._done:
            if not self._input:
                self._input = self._raw.read(CHUNK)
                if not self._input:
                    if self._inflate is not None:
                        raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                    self._done = True
                    break
            if self._inflate is None:
                if self._members:  # zero padding may follow a member (GzipFile skips it too)
                    self._input = self._input.lstrip(b"\0")
                    if not self._input:
                        continue
                self._inflate = zlib.decompressobj(self.GZIP)
            out: bytes = self._inflate.decompress(self._input, CHUNK)
            if self._inflate.eof:
                # Everything after the member is in unused_data (unconsumed_tail may still repeat
                # part of it when the output limit and the member's end came in the same call).
                self._input = self._inflate.unused_data
                self._inflate = None
                self._members += 1
            else:
                self._input = self._inflate.unconsumed_tail
            if out:
                return out
        return b""


def decompressor(raw: BinaryIO | VerifyingReader, compression: str) -> Any:
    """A reader of the decompressed bytes of `raw` ('gzip', 'zstd' or '' for a plain tar)."""
    if compression == "gzip":
        return Gunzip(raw)
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:  # pragma: no cover - zstandard is a dependency; only zstd layers need it
            raise PullError("zstd layers need the zstandard package") from None
        return zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=CHUNK, read_across_frames=True, closefd=False)  # type: ignore[arg-type]
    return raw


class LayerStream:
    """The decompressed tar of one layer: `read`/`tell`/forward `seek` for tarfile, `member(size)`
    to copy a member's data without tarfile's extra buffering. Use as a context manager."""

    def __init__(self, raw: BinaryIO, layer: Descriptor, diff_id: Digest, budget: Budget) -> None:
        compression = layer_compression(layer.media_type)
        if compression is None:
            raise PullError(f"unsupported layer media type {layer.media_type!r}")
        self._kind = compression or "plain"
        self._verifying = VerifyingReader(raw, layer.digest, layer.size)
        self._source = decompressor(self._verifying, compression)
        self._hasher = diff_id.hasher()
        self._algorithm = diff_id.algorithm
        self._budget = budget
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._buf = b""
        self._off = 0
        self._pos = 0
        self._eof = False
        self.last_read = b""
        self._thread = threading.Thread(target=self._produce, name="layer-reader", daemon=True)
        self._thread.start()

    def __enter__(self) -> LayerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    # -- producer (background thread) --------------------------------------------------------

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(CHUNK)
                if not data:
                    while self._verifying.read(CHUNK):  # the blob too must end where its size says
                        pass
                    self._put(None)
                    return
                self._budget.charge(len(data))
                self._hasher.update(data)
                self._put(data)
        except DigestMismatch as exc:
            self._put(VerificationError(exc.message))
        except decompression_errors() as exc:
            self._put(VerificationError(f"corrupt {self._kind} data: {exc}"))
        except BaseException as exc:
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- consumer ---------------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Make the current chunk non-empty; False at EOF."""
        while self._off >= len(self._buf):
            if self._eof:
                return False
            item = self._queue.get()
            if item is None:
                self._eof = True
                return False
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            self._buf, self._off = item, 0
        return True

    def read1(self, n: int) -> bytes:
        """Up to `n` bytes from the current chunk (short reads allowed, b"" at EOF)."""
        if n <= 0 or not self._fill():
            return b""
        # The whole chunk when it fits: no copy.
        data = self._buf if self._off == 0 and n >= len(self._buf) else self._buf[self._off:self._off + n]
        self._off += len(data)
        self._pos += len(data)
        return data

    def read(self, n: int = -1) -> bytes:
        """Exactly `n` bytes unless EOF comes first (tarfile relies on full reads)."""
        if n is None or n < 0:
            n = CHUNK
        if n > MAX_HEADER_READ:
            raise UnsafeContent(f"a tar header of more than {MAX_HEADER_READ} bytes")
        data = self.read1(n)
        if len(data) < n and data:
            parts = [data]
            got = len(data)
            while got < n:
                more = self.read1(n - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self.last_read = data
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence != 0:
            raise OSError("a layer stream only seeks forward")
        if pos < self._pos:
            raise OSError("a layer stream only seeks forward")
        while self._pos < pos:
            if not self.read1(min(CHUNK, pos - self._pos)):
                break
        return self._pos

    def seekable(self) -> bool:
        return False

    def member(self, size: int) -> _MemberData:
        """The next `size` bytes as a reader for one member's data."""
        return _MemberData(self, size)

    def finish(self) -> Digest:
        """Read to the end (trailing padding counts too) and return the diff_id actually seen."""
        while self.read1(CHUNK):
            pass
        self._thread.join()
        return Digest.from_hasher(self._algorithm, self._hasher)


class _MemberData:
    def __init__(self, stream: LayerStream, size: int) -> None:
        self._stream = stream
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._stream.read1(min(want, CHUNK))
        if not data:
            raise VerificationError("unexpected end of data inside a tar member")
        self._left -= len(data)
        return data
