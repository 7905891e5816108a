"""Malicious and broken layers: each is refused with a clear error, leaves no partial rootfs (nor a
staging directory), and touches nothing outside the destination."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from puller.assemble.layerstream import CHUNK, Gunzip
from puller.errors import UnsafeContent, VerificationError
from tests.puller.test_unpack import Layout, d, f, link
from tests.support.images import Blob, Entry, build_image, make_layer, make_tar, sha256
from tests.support.tools import require_tool


@dataclass
class Arena:
    outside: Path   # must stay exactly as it is
    work: Path      # the parent of dest: must be empty again after a refusal
    dest: Path

    @property
    def up(self) -> str:
        """A relative path from anywhere in the work tree to `outside`, climbing past the root."""
        return "../" * 16 + str(self.outside).lstrip("/")


def fingerprint(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(path)] = (st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns, st.st_ctime_ns, content)
    return out


@pytest.fixture
def arena(tmp_path: Path) -> Arena:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret").write_text("secret")
    (outside / "victim").write_text("victim")
    (outside / "dir" / "file").write_text("file")
    work = tmp_path / "work" / "deeper"
    work.mkdir(parents=True)
    return Arena(outside, work, work / "rootfs")


def refused(arena: Arena, layers: list[Blob], error: type[Exception], match: str, *, limit: int = 1 << 30,
            **image: object) -> Exception:
    layout = Layout(arena.work.parent.parent / "layout", build_image(layers, **image))  # type: ignore[arg-type]
    before = fingerprint(arena.outside)
    with pytest.raises(error, match=match) as caught:
        layout.unpack(arena.dest, limit=limit)
    assert not arena.dest.exists(), "a partial rootfs was left behind"
    assert os.listdir(arena.work) == [], "a staging directory was left behind"
    assert fingerprint(arena.outside) == before, "something outside the destination changed"
    return caught.value


def test_dotdot_names_are_refused(arena: Arena) -> None:
    refused(arena, [make_layer([f("../escaped", b"x")])], UnsafeContent, r"entry '\.\./escaped'.*contains '\.\.'")


def test_dotdot_inside_a_name_is_refused(arena: Arena) -> None:
    refused(arena, [make_layer([d("a"), f("a/../../escaped", b"x")])], UnsafeContent, r"contains '\.\.'")


def test_absolute_names_are_refused(arena: Arena) -> None:
    err = refused(arena, [make_layer([f(str(arena.outside / "secret"), b"pwned")])], UnsafeContent, "absolute name")
    assert "layer 1/1 (sha256:" in str(err)


def test_symlink_escape_in_the_same_layer_is_refused(arena: Arena) -> None:
    refused(arena, [make_layer([link("esc", arena.up), f("esc/secret", b"pwned")])], UnsafeContent,
            r"entry 'esc/secret'.*leads outside the root through the symlink 'esc'")


def test_symlink_planted_by_an_earlier_layer_is_not_followed_out(arena: Arena) -> None:
    refused(arena, [make_layer([link("esc", arena.up)]), make_layer([f("esc/secret", b"pwned")], "zstd")],
            UnsafeContent, r"layer 2/2 .*entry 'esc/secret'.*outside the root")


def test_symlink_chains_and_nested_dotdot_are_not_followed_out(arena: Arena) -> None:
    refused(arena, [make_layer([d("d"), link("d/up", "../.."), link("hop", "d/up")]),
                    make_layer([f("hop/x", b"pwned")])], UnsafeContent, "outside the root")


def test_hardlink_to_an_outside_file_is_refused(arena: Arena) -> None:
    refused(arena, [make_layer([link("hl", arena.up + "/secret", kind="hardlink")])], UnsafeContent,
            r"hardlink target .*contains '\.\.'")
    refused(arena, [make_layer([link("hl", str(arena.outside / "secret"), kind="hardlink")])], UnsafeContent,
            "absolute hardlink target")


def test_hardlink_through_a_planted_symlink_is_refused(arena: Arena) -> None:
    refused(arena, [make_layer([link("esc", arena.up)]), make_layer([link("hl", "esc/secret", kind="hardlink")])],
            UnsafeContent, r"entry 'hl'.*hardlink target 'esc/secret' leads outside the root")


def test_whiteouts_that_climb_out_are_refused(arena: Arena) -> None:
    refused(arena, [make_layer([f("../.wh.victim")])], UnsafeContent, r"contains '\.\.'")
    refused(arena, [make_layer([link("esc", arena.up)]), make_layer([f("esc/.wh.victim")])], UnsafeContent,
            r"entry 'esc/\.wh\.victim'.*outside the root")
    refused(arena, [make_layer([link("esc", arena.up + "/dir")]), make_layer([f("esc/.wh..wh..opq")])],
            UnsafeContent, "outside the root")
    refused(arena, [make_layer([d("a"), f("a/.wh...")])], UnsafeContent, "does not name an entry")


def test_root_cannot_be_replaced_by_a_symlink(arena: Arena) -> None:
    refused(arena, [make_layer([Entry(".", "symlink", target=str(arena.outside))])], UnsafeContent,
            "replace the root directory")


@pytest.mark.parametrize("compression", ["gzip", "zstd", ""])
def test_a_decompression_bomb_stops_at_the_limit(arena: Arena, compression: str) -> None:
    bomb = make_layer([f("zeros", bytes(24 << 20))], compression)
    if compression:
        assert bomb.size < 1 << 20
    refused(arena, [bomb], UnsafeContent, "more than the limit of 4194304 bytes", limit=4 << 20)


def test_the_limit_counts_all_layers_together(arena: Arena) -> None:
    layers = [make_layer([f(f"part{i}", bytes(3 << 20))]) for i in range(3)]
    refused(arena, layers, UnsafeContent, r"layer 3/3 .*more than the limit", limit=8 << 20)


def test_sparse_holes_count_toward_the_limit(arena: Arena, tmp_path: Path) -> None:
    """A sparse member costs a few bytes in the layer but its full size on disk."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as out:
        out.truncate(16 << 20)
        out.seek(5_000_000)
        out.write(b"hello")
    archive = tmp_path / "sparse.tar"
    subprocess.run([require_tool("tar"), "--sparse", "--format=posix", "-cf", str(archive), "-C", str(src), "sparse"],
                   check=True)
    data = archive.read_bytes()
    assert len(data) < 64 * 1024
    blob = Blob.of("application/vnd.oci.image.layer.v1.tar", data, diff_id=sha256(data))
    refused(arena, [blob], UnsafeContent, "entry 'sparse'.*more than the limit", limit=8 << 20)
    layout = Layout(tmp_path / "layout2", build_image([blob]))
    layout.unpack(arena.dest)
    assert (arena.dest / "sparse").read_bytes() == (src / "sparse").read_bytes()


def test_an_oversized_tar_header_is_refused_before_it_is_read(arena: Arena) -> None:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 200 << 20
    tar = header.tobuf(format=tarfile.USTAR_FORMAT) + b"a" * 4096
    blob = Blob.of("application/vnd.oci.image.layer.v1.tar", tar, diff_id=sha256(tar))
    refused(arena, [blob], UnsafeContent, "tar header of more than")


def test_absolute_symlinks_are_followed_inside_the_root(arena: Arena) -> None:
    """As in a container (and umoci): an absolute symlink target means the rootfs's own path."""
    layout = Layout(arena.work.parent.parent / "layout", build_image([
        make_layer([link("abs", str(arena.outside)), link("victim", str(arena.outside / "victim")),
                    link("vdir", str(arena.outside / "dir")), link("s", str(arena.outside / "secret"))]),
        make_layer([f("abs/secret", b"inside"), f("victim", b"replaced"), d("vdir"), f("vdir/file", b"inside"),
                    link("h", "s", kind="hardlink")]),
    ]))
    before = fingerprint(arena.outside)
    layout.unpack(arena.dest)
    assert fingerprint(arena.outside) == before
    rooted = arena.dest / str(arena.outside).lstrip("/")
    assert (rooted / "secret").read_bytes() == b"inside"
    assert (arena.dest / "victim").read_bytes() == b"replaced" and not (arena.dest / "victim").is_symlink()
    assert (arena.dest / "vdir").is_dir() and not (arena.dest / "vdir").is_symlink()
    assert (arena.dest / "h").is_symlink() and os.lstat(arena.dest / "h").st_ino == os.lstat(arena.dest / "s").st_ino


# -- broken images: refused as verification failures, with nothing left behind ----------------------

def test_a_diff_id_mismatch_is_refused(arena: Arena) -> None:
    good = make_layer([f("a", b"1")])
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    err = refused(arena, [good], VerificationError, r"layer 1/1 .*uncompressed content is sha256:.*image config says",
                  config_extra={"rootfs": {"type": "layers", "diff_ids": [wrong]}})
    assert err.detail["expected"] == wrong  # type: ignore[attr-defined]


def test_a_corrupt_blob_is_refused(arena: Arena, tmp_path: Path) -> None:
    plain = make_layer([f("a", b"original content")], "")
    tampered = plain.data.replace(b"original content", b"tampered content")
    layout = Layout(tmp_path / "layout", build_image([plain]))
    (layout.root / "blobs" / "sha256" / plain.digest.split(":")[1]).write_bytes(tampered)
    with pytest.raises(VerificationError, match="digest mismatch"):
        layout.unpack(arena.dest)
    assert not arena.dest.exists() and os.listdir(arena.work) == []


def test_truncated_and_garbage_compressed_data_is_refused(arena: Arena, tmp_path: Path) -> None:
    """Blobs whose digests match but whose compressed stream is broken. A truncated zstd frame just
    ends the stream early (zstandard's reader does not say), which the diff_id check then catches."""
    for compression in ("gzip", "zstd"):
        layer = make_layer([f("a", os.urandom(100_000))], compression)
        cut = Blob.of(layer.media_type, layer.data[: len(layer.data) // 2], diff_id=layer.diff_id)
        refused(arena, [cut], VerificationError, f"corrupt {compression} data|uncompressed content is")
        garbage = Blob.of(layer.media_type, layer.data[:4] + b"\x00garbage" * 100, diff_id=layer.diff_id)
        refused(arena, [garbage], VerificationError, f"corrupt {compression} data")


def test_an_invalid_tar_header_in_the_middle_is_refused(arena: Arena) -> None:
    tar = make_tar([f("a", b"1"), f("b", b"2")])
    bad = tar[:1024] + b"\xff" * 512 + tar[1536:]
    refused(arena, [Blob.of("application/vnd.oci.image.layer.v1.tar", bad, diff_id=sha256(bad))], VerificationError,
            "invalid tar header")


def test_malformed_entries_are_refused(arena: Arena) -> None:
    refused(arena, [make_layer([link("hl", "missing", kind="hardlink")])], VerificationError,
            r"entry 'hl'.*hardlink target 'missing' does not exist")
    refused(arena, [make_layer([f("a", b"1"), f("a/b", b"2")])], VerificationError,
            "entry .a/b.: .a. is not a directory")


def test_config_and_layer_count_mismatches_are_refused(arena: Arena, tmp_path: Path) -> None:
    image = build_image([make_layer([f("a", b"1")])])
    layout = Layout(tmp_path / "layout", image)
    layout.config_raw = image.config.data + b" "
    with pytest.raises(VerificationError, match="image config does not match its digest"):
        layout.unpack(arena.dest)
    refused(arena, [make_layer([f("a", b"1")])], VerificationError, "lists 2 diff_ids for 1 layers",
            config_extra={"rootfs": {"type": "layers", "diff_ids": [sha256(b"x"), sha256(b"y")]}})
    assert not arena.dest.exists() and os.listdir(arena.work) == []


def test_nothing_is_left_when_the_failure_is_in_the_last_layer(arena: Arena) -> None:
    """Two good layers were applied before the third is refused: still no partial rootfs."""
    refused(arena, [make_layer([f("one", b"1")]), make_layer([f("two", b"2")]), make_layer([f("/abs", b"3")])],
            UnsafeContent, r"layer 3/3 .*absolute name")


def _plain_layer(tar: bytes) -> Blob:
    return Blob.of("application/vnd.oci.image.layer.v1.tar", tar, diff_id=sha256(tar))


def test_a_global_pax_header_is_refused_unless_it_only_comments(arena: Arena, tmp_path: Path) -> None:
    """Python's tarfile would merge a global header into every later member (renaming them all, or
    costing time per member for every key); Go's archive/tar, which umoci and Docker use, ignores it."""
    files = make_tar([f("a", b"1"), f("b", b"2")])
    renaming = tarfile.TarInfo.create_pax_global_header({"path": "etc/passwd"}) + files
    refused(arena, [_plain_layer(renaming)], VerificationError, r"layer 1/1 .*global PAX header sets 'path'")
    many = tarfile.TarInfo.create_pax_global_header({f"k{i}": "v" for i in range(1000)}) + files
    refused(arena, [_plain_layer(many)], VerificationError, r"global PAX header sets 'k0', 'k1', .*\.\.\.")
    # git archive's global header carries only the commit id: harmless, and not merged into the files.
    git_archive = tarfile.TarInfo.create_pax_global_header({"comment": "0" * 40}) + files
    Layout(tmp_path / "layout", build_image([_plain_layer(git_archive)])).unpack(arena.dest)
    assert sorted(os.listdir(arena.dest)) == ["a", "b"] and (arena.dest / "b").read_bytes() == b"2"


def test_header_values_out_of_range_are_refused_in_one_line(arena: Arena) -> None:
    """Values Python cannot represent or the kernel cannot take are a malformed layer, not a crash."""
    for pax in ({"mtime": "Infinity"}, {"mtime": "1e30"}, {"atime": "-1e30"}, {"mtime": "NaN"}):
        refused(arena, [make_layer([f("f", b"x", pax=pax)])], VerificationError,
                r"layer 1/1 .*entry 'f': invalid header value")
    if os.geteuid() == 0:  # owners are applied only as root
        refused(arena, [make_layer([f("f", b"x", pax={"uid": "99999999999"})])], VerificationError,
                r"entry 'f': invalid header value")
    sparse = {"GNU.sparse.map": "a,b", "GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.size": "10"}
    refused(arena, [make_layer([f("ok", b"1"), f("f", b"x", pax=sparse)])], VerificationError,
            r"layer 1/1 .*invalid tar header at offset \d+")
    # GNU sparse 1.0 keeps its map in the data: a number too long to convert.
    info = tarfile.TarInfo("f")
    info.size = 10_240
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "f",
                        "GNU.sparse.realsize": "10"}
    tar = info.tobuf(tarfile.PAX_FORMAT) + b"1\n" + b"9" * 10_238 + bytes(1024)
    refused(arena, [_plain_layer(tar)], VerificationError, "invalid tar header at offset 0")


def test_gzip_streams_read_as_gzip_module_reads_them() -> None:
    """The zlib-based reader of gzip layers gives what Python's gzip module gives, or refuses what it
    refuses: several members (one ending exactly at a read boundary), zero padding between and after
    them, garbage after them, a cut stream, a wrong CRC."""
    def read(reader: object, n: int) -> bytes | None:
        out = []
        try:
            while chunk := reader.read(n):  # type: ignore[attr-defined]
                out.append(chunk)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            return None
        return b"".join(out)

    first = gzip.compress(b"\0" * (2 * CHUNK), 9)  # ends where a CHUNK-sized read does
    text = b"".join(hashlib.sha256(b"%d" % i).hexdigest().encode() for i in range(5000))
    second = gzip.compress(text, 6)
    crc = bytearray(second)
    crc[-8] ^= 1
    streams = [b"", first, first + second, first + b"\0" * 700 + second + b"\0" * 3, first + second + b"junk",
               (first + second)[:-3], first[:6], bytes(crc), b"\0\0" + second, first + b"\x1f"]
    for data in streams:
        expected = read(gzip.GzipFile(fileobj=io.BytesIO(data)), CHUNK)
        for n in (CHUNK, 5000):
            assert read(Gunzip(io.BytesIO(data)), n) == expected, (len(data), n)
    assert read(Gunzip(io.BytesIO(first + second)), CHUNK) == b"\0" * (2 * CHUNK) + text
