"""The unpacker's fast paths read what the slow ones read: `FastTarInfo` parses every header exactly
as `tarfile.TarInfo` does (or fails the same way), and the directories held open between entries
never lead a later entry where a fresh walk from the root would not."""

from __future__ import annotations

import os
import random
import tarfile
from pathlib import Path

import pytest

from puller.assemble.tarheader import FastTarInfo
from puller.errors import VerificationError
from tests.puller.test_unpack import Layout, d, f, link
from tests.support.images import build_image, make_layer

SLOTS = [name for cls in tarfile.TarInfo.__mro__ for name in getattr(cls, "__slots__", ())]


def parsed(cls: type[tarfile.TarInfo], buf: bytes) -> tuple[object, ...]:
    """Every attribute `frombuf` sets, or the exception it raises."""
    try:
        info = cls.frombuf(buf, "utf-8", "surrogateescape")
    except Exception as exc:  # the two must fail alike, whatever the kind
        return (type(exc), str(exc))
    return tuple(getattr(info, name, None) for name in SLOTS if name != "tarfile")


def headers() -> list[bytes]:
    """Headers of every format and entry kind, with values that need the unusual encodings."""
    out = []
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        for kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                     tarfile.CHRTYPE, tarfile.FIFOTYPE):
            for name, size, mtime, uid in (("a/b.txt", 12, 1_600_000_000, 0), ("dir/", 0, 0, 65534),
                                           ("p/" * 60 + "name", 7, 2**33 - 1, 2**21 - 1)):
                info = tarfile.TarInfo(name)
                info.type, info.size, info.mtime, info.uid, info.gid = kind, size, mtime, uid, 10
                info.linkname = "target" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                info.devmajor, info.devminor = (1, 3) if kind == tarfile.CHRTYPE else (0, 0)
                try:
                    raw = info.tobuf(fmt, "utf-8", "surrogateescape")
                except ValueError:  # a value this format cannot hold
                    continue
                out += [raw[i:i + tarfile.BLOCKSIZE] for i in range(0, len(raw), tarfile.BLOCKSIZE)]
    big = tarfile.TarInfo("big")  # GNU base-256 numbers
    big.size, big.mtime, big.uid = 2**40, -5, 2**30
    out.append(big.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")[-tarfile.BLOCKSIZE:])
    return out


def with_checksum(buf: bytearray, signed: bool = False) -> bytes:
    buf[148:156] = b" " * 8
    total = sum(b - 256 if signed and b > 127 else b for b in buf)
    buf[148:156] = b"%06o\0 " % (total & 0o777777)
    return bytes(buf)


def test_fast_headers_parse_exactly_as_tarfile_does() -> None:
    rng = random.Random(13)
    odd = b"0123456789 \0\t\x1c\x80\xff+-_xX7"
    cases: list[bytes] = [b"", b"\0" * 512, b"x" * 100, b"\0" * 511 + b"\1"]
    for header in headers():
        cases.append(header)
        for _ in range(60):  # mutate numeric fields (and sometimes the type), then make the checksum fit again
            buf = bytearray(header)
            start, width = rng.choice([(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (329, 8), (337, 8)])
            for i in rng.sample(range(start, start + width), rng.randint(1, 3)):
                buf[i] = rng.choice(odd)
            if rng.random() < 0.1:
                buf[156] = rng.choice(b"0125S7xgLK\0")
            cases.append(with_checksum(buf, signed=rng.random() < 0.2) if rng.random() < 0.9 else bytes(buf))
        cases.append(bytes(header[:148]) + b"12345678" + bytes(header[156:]))  # a bad checksum
    differing = [buf for buf in cases if parsed(FastTarInfo, buf) != parsed(tarfile.TarInfo, buf)]
    assert not differing, f"{len(differing)} of {len(cases)} headers differ, first: {differing[0]!r}"
    parsed_ok = sum(1 for buf in cases if not isinstance(parsed(tarfile.TarInfo, buf)[0], type))
    assert parsed_ok > len(cases) // 3  # the mutations did not only make invalid headers


def tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = ("-> " + os.readlink(path)) if path.is_symlink() else "dir" if path.is_dir() else path.read_text()
    return out


@pytest.mark.parametrize("flavour", ["symlink-over-dir", "file-over-dir", "whiteout"])
def test_directories_held_open_follow_every_replacement(tmp_path: Path, flavour: str) -> None:
    """A directory the unpacker holds open from an earlier entry must not be written into once
    the name leads elsewhere (replaced by a symlink or a file, whited out)."""
    lower = [d("p"), d("p/q"), f("p/q/1", b"1"), d("r")]
    if flavour == "symlink-over-dir":
        upper = [f("p/q/2", b"2"), link("p", "r"), f("p/q/3", b"3"), f("p/4", b"4")]
        want = {"p": "-> r", "r": "dir", "r/4": "4", "r/q": "dir", "r/q/3": "3"}
    elif flavour == "file-over-dir":  # p/q/3 has nowhere to go once p is a file
        upper = [f("p/q/2", b"2"), f("p", b"file"), f("p/q/3", b"3")]
        want = {}
    else:  # l/x is written through the lower layer's symlink; once that is whited out, l/ is a new directory
        lower.append(link("l", "r"))
        upper = [f("l/x", b"x"), f(".wh.l"), f("l/y", b"y")]
        want = {"l": "dir", "l/y": "y", "p": "dir", "p/q": "dir", "p/q/1": "1", "r": "dir", "r/x": "x"}
    image = build_image([make_layer(lower, "gzip"), make_layer(upper, "gzip")])
    if not want:
        with pytest.raises(VerificationError, match="'p' is not a directory"):
            Layout(tmp_path / "layout", image).unpack(tmp_path / "rootfs")
        return
    Layout(tmp_path / "layout", image).unpack(tmp_path / "rootfs")
    assert tree(tmp_path / "rootfs") == want


@pytest.mark.skipif(os.geteuid() != 0, reason="owners need root (CI runs as root)")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_new_files_get_the_layers_owner_and_mode_whatever_their_directory_hands_down(tmp_path: Path,
                                                                                      umask: int) -> None:
    """Files are created with their mode and left unchowned when that is what they get anyway:
    never when a setgid directory (or one created in it) would hand down its group, nor when the
    umask would take bits away."""
    entries = [d("g", mode=0o2775, gid=10), f("g/f", b"f", mode=0o664), f("g/sub/h", b"h", mode=0o777),
               f("g/k", b"k", mode=0o640, gid=10), f("plain", b"p", mode=0o777), f("suid", b"s", mode=0o4755),
               f("owned", b"o", mode=0o600, uid=1000, gid=1000)]
    image = build_image([make_layer(entries, "gzip")])
    old = os.umask(umask)
    try:
        Layout(tmp_path / "layout", image).unpack(tmp_path / "rootfs")
    finally:
        os.umask(old)
    got = {p.relative_to(tmp_path / "rootfs").as_posix(): (oct(p.lstat().st_mode & 0o7777), p.lstat().st_uid,
                                                          p.lstat().st_gid)
           for p in sorted((tmp_path / "rootfs").rglob("*")) if p.is_file()}
    assert got == {"g/f": ("0o664", 0, 0), "g/k": ("0o640", 0, 10), "g/sub/h": ("0o777", 0, 0),
                   "owned": ("0o600", 1000, 1000), "plain": ("0o777", 0, 0), "suid": ("0o4755", 0, 0)}
