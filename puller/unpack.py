"""Layers → a root filesystem (or an OCI runtime bundle), streamed, verified and confined.

Each layer blob is read once: the compressed bytes are checked against the manifest's descriptor,
the decompressed tar against the config's `rootfs.diff_ids[i]`, and every decompressed byte counts
against `max_unpacked_bytes`. Entries are applied by `tarsafe.RootTree`, which never touches
anything outside the root. Everything happens in a hidden sibling of `dest` that is renamed into
place only once the whole image was applied and verified; any failure removes it, so a refused
image leaves no partial rootfs behind.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ocispec.digest import Digest, DigestMismatch, Hasher, VerifyingReader
from ocispec.errors import OCIValidationError
from ocispec.manifest import Descriptor, ImageManifest
from ocispec.mediatypes import layer_compression

from .errors import PullError, UnsafeContent, UsageError, VerificationError
from .runtimespec import MAX_ACCOUNT_FILE, runtime_config
from .tarsafe import RootTree

CHUNK = 1 << 20
#: No single read of a tar header (PAX records, GNU long names) may ask for more than this.
MAX_HEADER_READ = 16 << 20

__all__ = ["unpack_image"]


def unpack_image(manifest: ImageManifest, config_raw: bytes, open_blob: Callable[[Digest], BinaryIO], dest: Path, *,
                 max_unpacked_bytes: int, bundle: bool = False, warn: Callable[[str], None]) -> None:
    """Build the root filesystem of an image at `dest` (or, with `bundle`, an OCI runtime bundle:
    `dest/config.json` and `dest/rootfs`). `dest` must not exist or be an empty directory.

    `open_blob(digest)` opens a stored blob for reading; it is closed here. Owners and device nodes
    need root: otherwise they are skipped and `warn` says so. Raises UnsafeContent for anything that
    would leave the root or exceed `max_unpacked_bytes`, VerificationError for digests or malformed
    layers, UsageError for a bad `dest`; in every case `dest` is left as it was.
    """
    _unpack(manifest, config_raw, open_blob, Path(dest), max_unpacked_bytes=max_unpacked_bytes, bundle=bundle,
            warn=warn, privileged=os.geteuid() == 0)


def _unpack(manifest: ImageManifest, config_raw: bytes, open_blob: Callable[[Digest], BinaryIO], dest: Path, *,
            max_unpacked_bytes: int, bundle: bool, warn: Callable[[str], None], privileged: bool) -> None:
    config, diff_ids = image_config(manifest, config_raw)
    _check_dest(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpacking", dir=dest.parent))
    try:
        rootfs = staging / "rootfs" if bundle else staging
        if bundle:
            rootfs.mkdir()
        os.chmod(rootfs, 0o755)  # what a layer's "./" entry, if any, then overrides
        if not privileged:
            warn("not running as root: file owners are not restored and device nodes are skipped")
        tree = RootTree(rootfs, privileged=privileged, warn=warn)
        try:
            budget = _Budget(max_unpacked_bytes)
            total = len(manifest.layers)
            for index, (layer, diff_id) in enumerate(zip(manifest.layers, diff_ids)):
                label = f"layer {index + 1}/{total} ({layer.digest})"
                _apply_layer(tree, layer, diff_id, open_blob, budget, label)
                if tree.skipped_devices:
                    names = ", ".join(tree.skipped_devices[:5]) + (", ..." if len(tree.skipped_devices) > 5 else "")
                    warn(f"{label}: skipped {len(tree.skipped_devices)} device node(s) that need root: {names}")
            tree.finish()
            if bundle:
                spec = runtime_config(config, lambda p: tree.read_file(p, MAX_ACCOUNT_FILE), rootless=not privileged,
                                      host_ids=(os.geteuid(), os.getegid()))
                spec_path = staging / "config.json"
                spec_path.write_text(json.dumps(spec, indent="\t") + "\n")
                os.chmod(spec_path, 0o644)
        finally:
            tree.close()
        try:
            os.rename(staging, dest)
        except OSError as exc:
            raise UsageError(f"cannot move the unpacked image to {dest}: {exc.strerror}") from None
    except BaseException:
        _discard(staging)
        raise


def image_config(manifest: ImageManifest, config_raw: bytes) -> tuple[dict[str, Any], list[Digest]]:
    """The parsed image config, checked against the manifest, and its diff_ids."""
    expected = manifest.config.digest
    if Digest.of(config_raw, expected.algorithm) != expected:
        raise VerificationError(f"image config does not match its digest {expected}")
    try:
        config = json.loads(config_raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(f"image config is not valid JSON: {exc}") from None
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    raw_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(raw_ids, list):
        raise VerificationError("image config has no rootfs.diff_ids list")
    try:
        diff_ids = [Digest.parse(d) for d in raw_ids]
    except OCIValidationError as exc:
        raise VerificationError(f"image config rootfs.diff_ids: {exc.message}") from None
    if len(diff_ids) != len(manifest.layers):
        raise VerificationError(f"image config lists {len(diff_ids)} diff_ids for {len(manifest.layers)} layers")
    return config, diff_ids


def _check_dest(dest: Path) -> None:
    try:
        st = dest.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{dest} exists and is not a directory")
    with os.scandir(dest) as entries:
        if any(True for _ in entries):
            raise UsageError(f"{dest} is not empty")


def _discard(path: Path) -> None:
    """Remove a staging tree, even one whose directories an unprivileged unpack left read-only."""
    def fix(func: Callable[..., Any], failed: str, _exc: Any) -> None:
        parent = os.path.dirname(failed)
        try:
            os.chmod(parent, 0o700)
            func(failed)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


# -- one layer --------------------------------------------------------------------------------

class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise UnsafeContent(f"the image unpacks to more than the limit of {self.limit} bytes")


#: What a corrupt compressed stream raises while being read.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error)
try:
    import zstandard

    DECOMPRESSION_ERRORS += (zstandard.ZstdError,)
except ImportError:  # pragma: no cover - zstandard is a dependency; only zstd layers need it
    zstandard = None  # type: ignore[assignment]


class _LayerStream:
    """The decompressed tar as tarfile reads it: hashed for the diff_id, charged to the budget, and
    forward-seekable (tarfile skips unread member data by seeking)."""

    def __init__(self, source: Any, hasher: Hasher, budget: _Budget, compression: str) -> None:
        self._source = source
        self._hasher = hasher
        self._budget = budget
        self._compression = compression or "plain"
        self._pos = 0
        self.last_read = b""

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        if n > MAX_HEADER_READ:
            raise UnsafeContent(f"a tar header of more than {MAX_HEADER_READ} bytes")
        parts = []
        got = 0
        while got < n:  # tarfile expects full reads; decompressors may return less
            try:
                data = self._source.read(n - got)
            except DigestMismatch as exc:
                raise VerificationError(exc.message) from None
            except DECOMPRESSION_ERRORS as exc:
                raise VerificationError(f"corrupt {self._compression} data: {exc}") from None
            if not data:
                break
            self._budget.charge(len(data))
            self._hasher.update(data)
            parts.append(data)
            got += len(data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += len(data)
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
            if not self.read(min(CHUNK, pos - self._pos)):
                break
        return self._pos

    def seekable(self) -> bool:
        return False

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def decompressor(raw: BinaryIO | VerifyingReader, compression: str) -> Any:
    """A reader of the decompressed bytes of `raw` ('gzip', 'zstd' or '' for a plain tar)."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    if compression == "zstd":
        if zstandard is None:  # pragma: no cover
            raise PullError("zstd layers need the zstandard package")
        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK, read_across_frames=True,
                                                          closefd=False)
    return raw


def _apply_layer(tree: RootTree, layer: Descriptor, diff_id: Digest, open_blob: Callable[[Digest], BinaryIO],
                 budget: _Budget, label: str) -> None:
    compression = layer_compression(layer.media_type)
    if compression is None:
        raise PullError(f"{label}: unsupported layer media type {layer.media_type!r}")
    raw = open_blob(layer.digest)
    try:
        verifying = VerifyingReader(raw, layer.digest, layer.size)
        hasher = diff_id.hasher()
        stream = _LayerStream(decompressor(verifying, compression), hasher, budget, compression)
        tree.begin_layer()
        try:
            _apply_entries(tree, stream, budget, label)
            stream.drain()
            while verifying.read(CHUNK):
                pass
        except PullError as exc:
            raise _relabel(exc, label) from None
        except DigestMismatch as exc:
            raise VerificationError(f"{label}: {exc.message}") from None
        except tarfile.TarError as exc:
            raise VerificationError(f"{label}: not a valid tar archive: {exc}") from None
        tree.end_layer()
    finally:
        raw.close()
    actual = Digest.from_hasher(diff_id.algorithm, hasher)
    if actual != diff_id:
        raise VerificationError(f"{label}: uncompressed content is {actual}, but the image config says {diff_id}",
                                layer=str(layer.digest), expected=str(diff_id), actual=str(actual))


def _apply_entries(tree: RootTree, stream: _LayerStream, budget: _Budget, label: str) -> None:
    try:
        tar = tarfile.TarFile(fileobj=stream, mode="r", encoding="utf-8", errors="surrogateescape")  # type: ignore[arg-type]
    except tarfile.ReadError:
        if stream.tell() == 0:
            return  # a zero-byte layer: nothing to apply
        raise
    while True:
        member = tar.next()
        if member is None:
            break
        tar.members.clear()  # a streaming reader needs no index; keep memory flat
        try:
            if member.issparse():
                budget.charge(member.size)  # holes cost no stream bytes but do cost disk
            tree.apply(member, tar.extractfile(member) if member.isreg() else None)
        except PullError as exc:
            raise _relabel(exc, f"entry {member.name!r}") from None
        except OSError as exc:
            raise PullError(f"entry {member.name!r}: {exc.strerror or exc}") from None
    # tarfile quietly ends an archive at an invalid header; Go's archive/tar (umoci) refuses it.
    if stream.last_read.count(0) != len(stream.last_read):
        raise VerificationError(f"invalid tar header at offset {tar.offset}")


def _relabel(exc: PullError, prefix: str) -> PullError:
    return type(exc)(f"{prefix}: {exc.message}", **exc.detail)
