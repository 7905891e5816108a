"""Export a stored image as a single tar file: `oci-archive` or `docker-archive`.

`oci-archive` is an OCI image layout in a tar: `oci-layout`, `index.json` (one entry, annotated with
the full reference as `org.opencontainers.image.ref.name` and `io.containerd.image.name`, like the
local store) and the image's blobs exactly as stored, so the manifest keeps its digest.

`docker-archive` is what `docker save` writes since Docker 25 (classic image store): an OCI layout
whose layers are the *uncompressed* layer tars (so their digests are the config's diff_ids), with a
manifest written for them, plus the `manifest.json` that `docker load` (every version) reads:
`[{"Config": "blobs/sha256/<config>", "RepoTags": ["name:tag"], "Layers": ["blobs/sha256/<diff_id>"]}]`.
Uncompressed layers load into any Docker, podman and skopeo, whatever the source compression was.

Blobs are streamed (and verified) into a temporary file next to `out`, which is renamed over `out`
only when complete; a failure leaves `out` as it was.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ocispec import mediatypes as mt
from ocispec.digest import Digest, DigestMismatch, VerifyingReader
from ocispec.errors import OCIValidationError
from ocispec.manifest import ImageManifest
from ocispec.reference import Reference, parse_reference

from ..errors import PullError, UnsafeContent, UsageError, VerificationError
from ..space import NO_SPACE, Reserve, SpaceGuard, full
from .layerstream import Budget, decompression_errors, decompressor
from .unpack import image_config

FORMATS = ("oci-archive", "docker-archive")
CHUNK = 1 << 20
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

__all__ = ["FORMATS", "export_image"]


def export_image(reference: str, manifest_raw: bytes, manifest: ImageManifest, config_raw: bytes,
                 open_blob: Callable[[Digest], BinaryIO], out: Path, fmt: str,
                 max_unpacked_bytes: int | None = None, min_free: Reserve | None = None) -> None:
    """Write the image (`manifest_raw`/`manifest`, its config and the blobs `open_blob` opens) to
    `out` in format `fmt` ('oci-archive' or 'docker-archive'), naming it `reference`. A
    docker-archive holds the layers decompressed: past `max_unpacked_bytes` of them (all layers
    together), UnsafeContent, as for unpack (a decompression bomb). With `min_free`, the write stops
    (InsufficientSpace) before the free space of `out`'s filesystem falls below that reserve."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")
    try:
        ref = parse_reference(reference)
    except OCIValidationError as exc:
        raise UsageError(f"invalid reference {reference!r}: {exc.message}") from None
    if manifest.raw != manifest_raw:
        raise VerificationError("the parsed manifest does not come from these manifest bytes")
    config, diff_ids = image_config(manifest, config_raw)
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    space = SpaceGuard(out.parent, min_free, "export") if min_free is not None else None
    if space is not None:
        space.check()  # already below the reserve: stop before writing anything
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name[:100]}.", suffix=".partial", dir=out.parent)
    try:
        try:
            with os.fdopen(fd, "w+b") as f:
                writer = _TarWriter(f, space)
                if fmt == "oci-archive":
                    _write_oci(writer, ref, manifest, config, config_raw, open_blob)
                else:
                    budget = Budget(max_unpacked_bytes) if max_unpacked_bytes is not None else None
                    _write_docker(writer, ref, manifest, config, config_raw, diff_ids, open_blob, budget)
                writer.finish()
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise full("export", out.parent) from None
            raise
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


# -- formats ----------------------------------------------------------------------------------

def _platform(config: dict[str, Any]) -> dict[str, str]:
    out = {"architecture": str(config.get("architecture") or ""), "os": str(config.get("os") or "")}
    if config.get("variant"):
        out["variant"] = str(config["variant"])
    return out


def _index(descriptor: dict[str, Any]) -> bytes:
    return _json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [descriptor]})


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def _write_oci(w: _TarWriter, ref: Reference, manifest: ImageManifest, config: dict[str, Any], config_raw: bytes,
               open_blob: Callable[[Digest], BinaryIO]) -> None:
    digest = manifest.digest()
    w.add_bytes("oci-layout", OCI_LAYOUT)
    _blob_dirs(w, [digest, manifest.config.digest, *(layer.digest for layer in manifest.layers)])
    w.add_bytes(_blob_path(manifest.config.digest), config_raw)
    for layer in manifest.layers:
        if not w.has(_blob_path(layer.digest)):
            _copy_blob(w, layer.digest, layer.size, open_blob)
    w.add_bytes(_blob_path(digest), manifest.raw)
    w.add_bytes("index.json", _index({
        "mediaType": manifest.media_type, "digest": str(digest), "size": len(manifest.raw),
        "annotations": {CONTAINERD_NAME: str(ref), REF_NAME: str(ref)},
        "platform": _platform(config),
    }))


def _write_docker(w: _TarWriter, ref: Reference, manifest: ImageManifest, config: dict[str, Any],
                  config_raw: bytes, diff_ids: list[Digest], open_blob: Callable[[Digest], BinaryIO],
                  budget: Budget | None = None) -> None:
    config_digest = Digest.of(config_raw)  # Docker names everything by sha256
    w.add_bytes("oci-layout", OCI_LAYOUT)
    _blob_dirs(w, [config_digest, *diff_ids])
    w.add_bytes(_blob_path(config_digest), config_raw)
    layers = []
    for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
        path = _blob_path(diff_id)
        if not w.has(path):
            compression = mt.layer_compression(layer.media_type)
            if compression is None:
                raise PullError(f"layer {layer.digest}: unsupported layer media type {layer.media_type!r}")
            with _open_verified(open_blob, layer.digest, layer.size) as raw:
                source = decompressor(raw, compression)
                try:
                    w.add_stream(path, _Charged(source, budget) if budget else source, diff_id)
                except UnsafeContent as exc:
                    raise UnsafeContent(f"layer {layer.digest}: {exc.message}") from None
                try:
                    while raw.read(CHUNK):  # the compressed blob too must end where its digest says
                        pass
                except DigestMismatch as exc:
                    raise VerificationError(f"layer {layer.digest}: {exc.message}") from None
        layers.append({"mediaType": mt.OCI_LAYER_TAR, "digest": str(diff_id), "size": w.size_of(path)})
    oci_manifest = _json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": str(config_digest), "size": len(config_raw)},
        "layers": layers,
    })
    manifest_digest = Digest.of(oci_manifest)
    if not w.has(_blob_path(manifest_digest)):
        w.add_bytes(_blob_path(manifest_digest), oci_manifest)
    annotations = {CONTAINERD_NAME: str(ref), REF_NAME: ref.tag} if ref.tag else {}
    w.add_bytes("index.json", _index({
        "mediaType": mt.OCI_MANIFEST, "digest": str(manifest_digest), "size": len(oci_manifest),
        **({"annotations": annotations} if annotations else {}), "platform": _platform(config),
    }))
    repo_tags = [Reference(ref.domain, ref.repository, ref.tag).familiar()] if ref.tag else []
    w.add_bytes("manifest.json", _json([{
        "Config": _blob_path(config_digest),
        "RepoTags": repo_tags,
        "Layers": [_blob_path(d) for d in diff_ids],
    }]))


def _blob_dirs(w: _TarWriter, digests: list[Digest]) -> None:
    w.add_dir("blobs")
    for algorithm in sorted({d.algorithm for d in digests}):
        w.add_dir(f"blobs/{algorithm}")


class _Charged:
    """A reader whose every byte counts against `budget`."""

    def __init__(self, source: Any, budget: Budget) -> None:
        self._source, self._budget = source, budget

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._source.read(n)
        self._budget.charge(len(data))
        return data


class _open_verified:
    """open_blob(digest) wrapped in a VerifyingReader, closed on exit."""

    def __init__(self, open_blob: Callable[[Digest], BinaryIO], digest: Digest, size: int) -> None:
        self._raw = open_blob(digest)
        self.reader = VerifyingReader(self._raw, digest, size)

    def __enter__(self) -> VerifyingReader:
        return self.reader

    def __exit__(self, *exc: object) -> None:
        self._raw.close()


def _copy_blob(w: _TarWriter, digest: Digest, size: int, open_blob: Callable[[Digest], BinaryIO]) -> None:
    with _open_verified(open_blob, digest, size) as reader:
        w.add_stream(_blob_path(digest), reader, None, size=size)  # the VerifyingReader checks it


# -- a minimal streaming tar writer -------------------------------------------------------------

class _TarWriter:
    """Regular files and directories only, GNU format (sizes past 8 GiB fit in the fixed header, so a
    member of unknown size gets a placeholder header that is patched once its size is known)."""

    def __init__(self, f: BinaryIO, space: SpaceGuard | None = None) -> None:
        self._f = f
        self._space = space
        self._sizes: dict[str, int] = {}

    def _write(self, data: bytes) -> None:
        if self._space is not None:
            self._space.charge(len(data))
        self._f.write(data)

    def has(self, name: str) -> bool:
        return name in self._sizes

    def size_of(self, name: str) -> int:
        return self._sizes[name]

    def _header(self, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = size if kind == tarfile.REGTYPE else 0
        info.mode = 0o644 if kind == tarfile.REGTYPE else 0o755
        info.mtime = 0
        info.uname = info.gname = ""
        return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict")

    def add_dir(self, name: str) -> None:
        if name + "/" not in self._sizes:
            self._write(self._header(name + "/", 0, tarfile.DIRTYPE))
            self._sizes[name + "/"] = 0

    def add_bytes(self, name: str, data: bytes) -> None:
        self._write(self._header(name, len(data)))
        self._write(data)
        self._pad(len(data))
        self._sizes[name] = len(data)

    def add_stream(self, name: str, source: Any, digest: Digest | None, size: int | None = None) -> None:
        """Copy `source` to EOF as member `name`, checking its bytes against `digest` if given."""
        start = self._f.tell()
        header = self._header(name, size or 0)
        self._write(header)
        hasher = digest.hasher() if digest is not None else None
        count = 0
        try:
            while True:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                if hasher is not None:
                    hasher.update(chunk)
                self._write(chunk)
                count += len(chunk)
        except DigestMismatch as exc:
            raise VerificationError(f"{name}: {exc.message}") from None
        except decompression_errors() as exc:
            raise VerificationError(f"{name}: corrupt compressed data: {exc}") from None
        if digest is not None and hasher is not None and hasher.hexdigest() != digest.hex:
            raise VerificationError(f"{name}: content is {digest.algorithm}:{hasher.hexdigest()}, expected {digest}")
        if size is not None and count != size:
            raise VerificationError(f"{name}: {count} bytes, expected {size}")
        self._pad(count)
        if size is None:
            end = self._f.tell()
            patched = self._header(name, count)
            if len(patched) != len(header):  # cannot happen in GNU format; guard the invariant
                raise PullError(f"{name}: tar header changed length")
            self._f.seek(start)
            self._f.write(patched)
            self._f.seek(end)
        self._sizes[name] = count

    def _pad(self, n: int) -> None:
        if n % tarfile.BLOCKSIZE:
            self._write(b"\0" * (tarfile.BLOCKSIZE - n % tarfile.BLOCKSIZE))

    def finish(self) -> None:
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))
