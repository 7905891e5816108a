"""Layers → a root filesystem (or an OCI runtime bundle), streamed, verified and confined.

Each layer blob is read once: the compressed bytes are checked against the manifest's descriptor,
the decompressed tar against the config's `rootfs.diff_ids[i]`, and every decompressed byte counts
against `max_unpacked_bytes`. Entries are applied by `tarsafe.RootTree`, which never touches
anything outside the root. Everything happens in a hidden sibling of `dest` that is renamed into
place only once the whole image was applied and verified; any failure removes it, so a refused
image leaves no partial rootfs behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ocispec.digest import Digest
from ocispec.errors import OCIValidationError
from ocispec.manifest import Descriptor, ImageManifest
from ocispec.mediatypes import layer_compression

from ..errors import ClientError, InsufficientSpace, PullError, UsageError, VerificationError
from ..space import NO_SPACE, Reserve, SpaceGuard, full
from .confine import LayerFormatError
from .dest import check_dest
from .layerstream import Budget, LayerStream
from .runtimespec import MAX_ACCOUNT_FILE, runtime_config
from .tarheader import FastTarInfo
from .tarsafe import RootTree

__all__ = ["Unpacker", "unpack_image"]


def unpack_image(manifest: ImageManifest, config_raw: bytes, open_blob: Callable[[Digest], BinaryIO], dest: Path, *,
                 max_unpacked_bytes: int, bundle: bool = False, warn: Callable[[str], None],
                 keep_root_mode: bool = False, min_free: Reserve | None = None) -> None:
    """Build the root filesystem of an image at `dest` (or, with `bundle`, an OCI runtime bundle:
    `dest/config.json` and `dest/rootfs`). `dest` must not exist or be an empty directory.

    As root, a rootfs holds the image's setuid-root programs and device nodes with its owners and
    modes; like umoci's bundle directory, what contains them is mode 0700 so that other local users
    cannot reach them: the bundle directory with `bundle`, else `dest` itself, unless
    `keep_root_mode` gives it the mode the image says (`warn` tells which happened).

    `open_blob(digest)` opens a stored blob for reading; it is closed here. Owners and device nodes
    need root: otherwise they are skipped and `warn` says so. Raises UnsafeContent for anything that
    would leave the root or exceed `max_unpacked_bytes`, VerificationError for digests or malformed
    layers, UsageError for a bad `dest`, InsufficientSpace (with `min_free`) before the free space of
    the filesystem `dest` is on falls below that reserve; in every case `dest` is left as it was.
    """
    _unpack(manifest, config_raw, open_blob, dest, max_unpacked_bytes=max_unpacked_bytes, bundle=bundle, warn=warn,
            privileged=os.geteuid() == 0, keep_root_mode=keep_root_mode, min_free=min_free)


def _unpack(manifest: ImageManifest, config_raw: bytes, open_blob: Callable[[Digest], BinaryIO], dest: Path, *,
            max_unpacked_bytes: int, bundle: bool, warn: Callable[[str], None], privileged: bool,
            keep_root_mode: bool = False, min_free: Reserve | None = None) -> None:
    with Unpacker(manifest, config_raw, open_blob, dest, max_unpacked_bytes=max_unpacked_bytes, bundle=bundle,
                  warn=warn, privileged=privileged, keep_root_mode=keep_root_mode, min_free=min_free) as unpacker:
        for _ in manifest.layers:
            unpacker.apply_next()
        unpacker.complete()


class Unpacker:
    """One unpack in progress, for callers that get layers one at a time (`puller pull` applies each
    as soon as it is downloaded and verified): the image is built in a hidden sibling of `dest`,
    `apply_next()` applies the next layer in order (its blob read through `open_blob`, so only
    stored, verified blobs), `complete()` finishes the tree and renames it into place. Leaving the
    `with` block without `complete()` (a failure anywhere, in a layer or in the caller) removes the
    staging tree: `dest` is left as it was. Arguments and errors are those of `unpack_image`."""

    def __init__(self, manifest: ImageManifest, config_raw: bytes, open_blob: Callable[[Digest], BinaryIO],
                 dest: Path, *, max_unpacked_bytes: int, bundle: bool, warn: Callable[[str], None], privileged: bool,
                 keep_root_mode: bool = False, min_free: Reserve | None = None) -> None:
        self.config, self._diff_ids = image_config(manifest, config_raw)
        self.dest = dest = Path(os.path.abspath(dest))
        self._layers = manifest.layers
        self._open_blob = open_blob
        self._bundle, self._warn, self._privileged = bundle, warn, privileged
        check_dest(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        space = SpaceGuard(dest.parent, min_free, "unpack") if min_free is not None else None
        if space is not None:
            space.check()  # already below the reserve: stop before writing anything
        self.applied = 0
        self._done = False
        self._staging = Path(tempfile.mkdtemp(prefix=f".{dest.name[:100]}.", suffix=".unpacking", dir=dest.parent))
        try:
            rootfs = self._staging / "rootfs" if bundle else self._staging  # the staging directory is mode 0700
            if bundle:
                rootfs.mkdir(mode=0o700)
            if not privileged:
                warn("not running as root: file owners are not restored and device nodes are skipped")
            self._private_root = privileged and not bundle and not keep_root_mode
            self._tree = RootTree(rootfs, privileged=privileged, warn=warn, private_root=self._private_root)
        except BaseException:
            _discard(self._staging)
            raise
        self._budget = Budget(max_unpacked_bytes, space)

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self._tree.close()
            _discard(self._staging)

    def apply_next(self) -> None:
        """Apply the next layer (in the manifest's order) from its stored blob."""
        index = self.applied
        layer, diff_id = self._layers[index], self._diff_ids[index]
        label = f"layer {index + 1}/{len(self._layers)} ({layer.digest})"
        _apply_layer(self._tree, layer, diff_id, self._open_blob, self._budget, label)
        skipped = self._tree.skipped_devices
        if skipped:
            names = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
            self._warn(f"{label}: skipped {len(skipped)} device node(s) that need root: {names}")
        self.applied += 1

    def complete(self) -> None:
        """Every layer applied: finish the tree (directory modes, the bundle's config.json) and
        rename it into place at `dest`."""
        if self.applied != len(self._layers):
            raise PullError(f"unpack completed after {self.applied} of {len(self._layers)} layers")
        tree = self._tree
        tree.finish()
        if self._private_root:
            self._warn(f"{self.dest} is left mode 0700 so that other users cannot reach the image's setuid programs "
                       "and device nodes (use --bundle, or --keep-root-mode for the image's own mode)")
        if self._bundle:
            spec = runtime_config(self.config, lambda p: tree.read_file(p, MAX_ACCOUNT_FILE),
                                  rootless=not self._privileged, host_ids=(os.geteuid(), os.getegid()))
            spec_path = self._staging / "config.json"
            spec_path.write_text(json.dumps(spec, indent="\t") + "\n")
            os.chmod(spec_path, 0o644)
        tree.close()
        try:
            os.rename(self._staging, self.dest)
        except OSError as exc:
            raise UsageError(f"cannot move the unpacked image to {self.dest}: {exc.strerror}") from None
        self._done = True


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

def _apply_layer(tree: RootTree, layer: Descriptor, diff_id: Digest, open_blob: Callable[[Digest], BinaryIO],
                 budget: Budget, label: str) -> None:
    if layer_compression(layer.media_type) is None:
        raise PullError(f"{label}: unsupported layer media type {layer.media_type!r}")
    raw = open_blob(layer.digest)
    try:
        tree.begin_layer()
        try:
            with LayerStream(raw, layer, diff_id, budget) as stream:
                _apply_entries(tree, stream, budget)
                actual = stream.finish()
        except ClientError as exc:
            raise _relabel(exc, label) from None
        except tarfile.TarError as exc:
            raise VerificationError(f"{label}: not a valid tar archive: {exc}") from None
        tree.end_layer()
    finally:
        raw.close()
    if actual != diff_id:
        raise VerificationError(f"{label}: uncompressed content is {actual}, but the image config says {diff_id}",
                                layer=str(layer.digest), expected=str(diff_id), actual=str(actual))


#: What tarfile and the os calls raise for header values they cannot represent (a PAX mtime of
#: Infinity or 1e30, a uid past 2**32, a GNU sparse map that is not numbers).
BAD_VALUE_ERRORS = (ValueError, OverflowError)


def _apply_entries(tree: RootTree, stream: LayerStream, budget: Budget) -> None:
    try:
        tar = tarfile.TarFile(fileobj=stream, mode="r", encoding="utf-8", errors="surrogateescape",  # type: ignore[arg-type]
                              tarinfo=FastTarInfo)
    except tarfile.ReadError:
        if stream.tell() == 0:
            return  # a zero-byte layer: nothing to apply
        raise
    except BAD_VALUE_ERRORS as exc:  # the first header is read here
        raise LayerFormatError(f"invalid tar header at offset 0: {_short(exc)}") from None
    while True:
        offset = tar.offset
        try:
            member = tar.next()
        except BAD_VALUE_ERRORS as exc:
            raise LayerFormatError(f"invalid tar header at offset {offset}: {_short(exc)}") from None
        _drop_global_headers(tar)
        if member is None:
            break
        tar.members.clear()  # type: ignore[attr-defined]  # a streaming reader needs no index; keep memory flat
        try:
            data: Any = None
            if member.issparse():
                budget.charge(member.size)  # holes cost no stream bytes but do cost disk
                data = tar.extractfile(member)
            elif member.isreg():
                data = stream.member(member.size)  # right after its header: copy it directly
            tree.apply(member, data)
        except ClientError as exc:
            raise _relabel(exc, f"entry {member.name!r}") from None
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise full("unpack", os.path.dirname(tree.path)) from None
            raise PullError(f"entry {member.name!r}: {exc.strerror or exc}") from None
        except BAD_VALUE_ERRORS as exc:
            raise LayerFormatError(f"entry {member.name!r}: invalid header value: {_short(exc)}") from None
    # tarfile quietly ends an archive at an invalid header; Go's archive/tar (umoci) refuses it.
    if stream.last_read.count(0) != len(stream.last_read):
        raise VerificationError(f"invalid tar header at offset {tar.offset}")


#: The only key a global PAX header ('g') may set: git archive writes the commit id there.
HARMLESS_GLOBAL_KEYS = frozenset({"comment"})


def _drop_global_headers(tar: tarfile.TarFile) -> None:
    """Python's tarfile merges a global PAX header into every later member (its `path` would rename
    them all; many keys make every member slow), where Go's archive/tar (umoci, Docker) ignores it
    for names and metadata. Refuse a layer whose global header says anything but a comment."""
    if tar.pax_headers:
        keys = sorted(set(tar.pax_headers) - HARMLESS_GLOBAL_KEYS)
        if keys:
            shown = ", ".join(repr(k) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
            raise LayerFormatError(f"a global PAX header sets {shown}; such layers are refused")
        tar.pax_headers = {}


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _relabel(exc: ClientError, prefix: str) -> ClientError:
    if isinstance(exc, InsufficientSpace):
        return exc  # about the filesystem, not the entry or layer that happened to be written
    return type(exc)(f"{prefix}: {exc.message}", **exc.detail)
