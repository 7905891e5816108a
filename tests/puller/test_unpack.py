"""puller.unpack against `umoci unpack` of the same OCI layout: every whiteout, link and mode case.

Each image is written with tests.support.images into an OCI layout; `umoci unpack` (as root, like
these tests run in CI) and `unpack_image` unpack it, and the two trees must agree on names, types,
modes, owners, sizes, content hashes, link targets, hardlink groups, device numbers, xattrs and
mtimes (all but the root's, which umoci leaves at "now" unless a layer has a "./" entry).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import BinaryIO

import pytest

from ocispec.digest import Digest
from ocispec.manifest import ImageManifest, parse_manifest
from puller.assemble import unpack_image
from tests.support.images import Entry, Image, build_image, make_layer, write_oci_layout
from tests.support.tools import require_tool

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="owners and device nodes need root (CI runs as root)")
T = 1_600_000_000  # mtimes distinct from the builder's default


class Layout:
    """An OCI layout on disk holding one image, and what unpack_image needs to read it."""

    def __init__(self, root: Path, image: Image) -> None:
        self.root = write_oci_layout(root, image)
        self.image = image
        self.manifest: ImageManifest = parse_manifest(image.manifest)  # type: ignore[assignment]
        self.config_raw = image.config.data

    def open_blob(self, digest: Digest) -> BinaryIO:
        return open(self.root / "blobs" / digest.algorithm / digest.hex, "rb")

    def unpack(self, dest: Path, *, limit: int = 1 << 30, bundle: bool = False, warnings: list[str] | None = None,
               keep_root_mode: bool = True) -> None:
        """Unpack to `dest`; by default the root gets the image's mode, as umoci's rootfs does."""
        sink = warnings if warnings is not None else []
        unpack_image(self.manifest, self.config_raw, self.open_blob, dest, max_unpacked_bytes=limit, bundle=bundle,
                     warn=sink.append, keep_root_mode=keep_root_mode)


def umoci_unpack(layout: Path, bundle: Path) -> Path:
    require_tool("umoci")
    args = ["umoci", "unpack", *([] if ROOT else ["--rootless"]), "--image", f"{layout}:latest", str(bundle)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return bundle / "rootfs"


def snapshot(root: Path, *, skip_mtime: frozenset[str] = frozenset()) -> dict[str, dict[str, object]]:
    """Everything the comparison looks at, keyed by path relative to root ('.' is the root)."""
    tree: dict[str, dict[str, object]] = {}
    inodes: dict[tuple[int, int], list[str]] = {}

    def record(path: Path, rel: str) -> None:
        st = path.lstat()
        info: dict[str, object] = {
            "type": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid,
        }
        if rel not in skip_mtime and rel != ".":
            info["mtime"] = st.st_mtime_ns
        if stat.S_ISREG(st.st_mode):
            info["size"] = st.st_size
            info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        elif stat.S_ISLNK(st.st_mode):
            info["target"] = os.readlink(path)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            names = []
        info["xattrs"] = {n: os.getxattr(path, n, follow_symlinks=False)
                          for n in sorted(names) if n != "security.selinux"}
        tree[rel] = info

    record(root, ".")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            record(path, path.relative_to(root).as_posix())
    for group in inodes.values():
        for rel in group:
            tree[rel]["links"] = sorted(group)
    return tree


def assert_same_tree(ours: Path, theirs: Path, *, skip_mtime: frozenset[str] = frozenset()) -> None:
    a, b = snapshot(ours, skip_mtime=skip_mtime), snapshot(theirs, skip_mtime=skip_mtime)
    assert sorted(a) == sorted(b), "different names"
    diffs = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert not diffs, f"entries differ (ours, umoci): {json.dumps(diffs, indent=1, default=str)[:4000]}"


def compare_with_umoci(tmp_path: Path, layers: list[tuple[list[Entry], str]], *, flavour: str = "oci",
                       skip_mtime: frozenset[str] = frozenset()) -> Path:
    """Unpack `layers` ((entries, compression) pairs) with puller and with umoci. umoci 0.4 reads
    neither zstd nor Docker manifests, so its copy of the image is OCI with zstd layers gzipped: the
    same tars, the same diff_ids."""
    ours_image = build_image([make_layer(e, c, flavour) for e, c in layers], flavour=flavour)
    umoci_image = build_image([make_layer(e, "gzip" if c == "zstd" else c) for e, c in layers])
    assert json.loads(ours_image.config.data)["rootfs"] == json.loads(umoci_image.config.data)["rootfs"]
    theirs = umoci_unpack(write_oci_layout(tmp_path / "umoci-layout", umoci_image), tmp_path / "umoci")
    ours = tmp_path / "ours"
    Layout(tmp_path / "layout", ours_image).unpack(ours)
    assert_same_tree(ours, theirs, skip_mtime=skip_mtime)
    return ours


def d(name: str, mode: int = 0o755, mtime: int = T, **kw: object) -> Entry:
    return Entry(name, "dir", mode=mode, mtime=mtime, **kw)  # type: ignore[arg-type]


def f(name: str, data: bytes = b"", mode: int = 0o644, mtime: int = T, **kw: object) -> Entry:
    return Entry(name, "file", data=data, mode=mode, mtime=mtime, **kw)  # type: ignore[arg-type]


def link(name: str, target: str, kind: str = "symlink", mtime: int = T) -> Entry:
    return Entry(name, kind, target=target, mtime=mtime)


BIG = hashlib.sha256(b"big").digest() * (3 * 1024 * 1024 // 32 + 7)  # > 3 MiB: several copy chunks


def base_layer() -> list[Entry]:
    return [
        d("./", mode=0o751, mtime=T - 1),
        d("etc", mtime=T + 1),
        f("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n", mtime=T + 2),
        f("etc/group", b"root:x:0:\nbob:x:1000:\nwheel:x:10:bob\n", mtime=T + 2),
        link("etc/localtime", "/usr/share/zoneinfo/UTC"),          # absolute symlink, dangling
        link("etc/rel", "passwd"),                                   # relative symlink
        d("bin"),
        f("bin/sh", b"#!sh\n" * 100, mode=0o755, mtime=T + 3),
        link("bin/sh-hard", "bin/sh", kind="hardlink"),
        d("usr"), d("usr/lib", mtime=T + 4), f("usr/lib/libc.so", BIG, mode=0o755),
        link("lib", "usr/lib"),
        link("conf", "/etc"),
        f("suid", b"s", mode=0o4755, uid=1000, gid=1000),
        f("sgid", b"g", mode=0o2711, uid=0, gid=10),
        d("shared", mode=0o2775, gid=10),
        d("tmp", mode=0o1777),
        d("private", mode=0o700, uid=1000, gid=1000),
        f("private/key", b"k", mode=0o400, uid=1000, gid=1000),
        f("noperm", b"x", mode=0o000),
        Entry("fifo", "fifo", mode=0o620, mtime=T),
        Entry("dev-null", "chardev", mode=0o666, devmajor=1, devminor=3, mtime=T),
        Entry("dev-loop", "blockdev", mode=0o660, devmajor=7, devminor=0, mtime=T),
        f("xattr-file", b"x", pax={"SCHILY.xattr.user.comment": "hello", "SCHILY.xattr.trusted.note": "t"}),
        d("xattr-dir", pax={"SCHILY.xattr.user.dir": "d"}),
        f("nanos", b"n", pax={"mtime": "1600000000.123456789"}),
        f("empty"),
        f("with space and ünïcode", b"u"),
        f("long/" * 0 + "l" * 150, b"long name"),
        d("deep"), d("deep/a"), d("deep/a/b"), f("deep/a/b/c", b"c"),
        # to be whited out, replaced or made opaque by the next layers
        d("old"), f("old/a", b"a"), d("old/sub"), f("old/sub/b", b"b"),
        d("opq", mtime=T + 5), f("opq/x", b"x"), d("opq/y"), f("opq/y/z", b"z"),
        d("opq-late"), f("opq-late/gone", b"g"),
        f("gone", b"g"), d("gone-dir"), f("gone-dir/inner", b"i"),
        f("file-to-dir", b"f"), d("dir-to-file"), f("dir-to-file/inner", b"i"),
        link("link-to-file", "etc/passwd"), link("link-to-dir", "usr"),
        f("hl-target", b"original"), link("hl-other", "hl-target", kind="hardlink"),
        d("same"), f("same/x", b"lower"),
        d("late"),
    ]


def second_layer() -> list[Entry]:
    return [
        f("late/child", b"child before its directory's entry"),
        d("late", mode=0o750, mtime=T + 9),
        d("opq", mtime=T + 6),
        f("opq/new", b"new, listed before the marker"),
        f("opq/.wh..wh..opq"),
        f(".wh.gone"),
        f(".wh.gone-dir"),
        f(".wh.never-existed"),
        f("old/.wh.a"),
        f("old/sub/.wh.b"),
        d("file-to-dir", mtime=T + 7), f("file-to-dir/now", b"inside"),
        f("dir-to-file", b"now a file"),
        f("link-to-file", b"replaces the symlink, not its target"),
        d("link-to-dir", mode=0o711),
        f("hl-target", b"replaced: the other link keeps the old inode"),
        f("lib/through-symlink", b"written through lib -> usr/lib"),
        f("conf/through-absolute", b"written through conf -> /etc (re-rooted)"),
        f("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", mtime=T + 8),  # no etc/ entry: etc keeps its mtime
        f("same/.wh.x"), f("same/x", b"upper, whiteout before it in the same layer"),
        d("etc", mode=0o750, mtime=T + 10, pax={"SCHILY.xattr.user.new": "1"}),  # dir over dir: new metadata
        f("bin/sh", b"#!new sh\n", mode=0o555),
        link("bin/sh-hard2", "bin/sh", kind="hardlink"),
        f("suid", b"s2", mode=0o6755, uid=2000, gid=2000),
    ]


def third_layer() -> list[Entry]:
    return [
        f("opq-late/kept", b"created before the opaque marker at the end"),
        f("opq-late/.wh..wh..opq"),
        f("deep/a/.wh.b"),
        f(".wh.hl-other"),
        f("xattr-file", b"x2", pax={"SCHILY.xattr.user.other": "o"}),
        f("usr/lib/.wh.libc.so"),
    ]


@needs_root
def test_every_case_matches_umoci_across_gzip_zstd_and_plain_layers(tmp_path: Path) -> None:
    ours = compare_with_umoci(tmp_path, [(base_layer(), "gzip"), (second_layer(), "zstd"), (third_layer(), "")])
    # spot checks, so the comparison cannot pass by both sides being wrong the same way
    assert (ours / "usr/lib/through-symlink").read_bytes() == b"written through lib -> usr/lib"
    assert (ours / "etc/through-absolute").exists() and (ours / "conf").is_symlink()
    assert not (ours / "gone").exists() and not (ours / "gone-dir").exists()
    assert sorted(os.listdir(ours / "opq")) == ["new"]
    assert sorted(os.listdir(ours / "opq-late")) == ["kept"]
    assert (ours / "same/x").read_bytes().startswith(b"upper")
    assert (ours / "hl-other").exists() is False
    assert os.stat(ours / "bin/sh").st_ino == os.stat(ours / "bin/sh-hard2").st_ino
    assert os.stat(ours / "bin/sh").st_ino != os.stat(ours / "bin/sh-hard").st_ino
    assert stat.S_IMODE(os.lstat(ours / "suid").st_mode) == 0o6755 and os.lstat(ours / "suid").st_uid == 2000
    assert stat.S_IMODE(os.lstat(ours / "tmp").st_mode) == 0o1777
    assert stat.S_ISCHR(os.lstat(ours / "dev-null").st_mode) and stat.S_ISFIFO(os.lstat(ours / "fifo").st_mode)
    assert os.getxattr(ours / "etc", "user.new") == b"1"
    assert os.lstat(ours / "nanos").st_mtime_ns == 1_600_000_000_123_456_789
    assert os.lstat(ours / "etc").st_mtime_ns == (T + 10) * 10**9
    assert os.lstat(ours).st_mtime_ns == (T - 1) * 10**9


@needs_root
def test_docker_media_types_and_missing_parent_entries_match_umoci(tmp_path: Path) -> None:
    """Layers without entries for their parent directories (umoci makes them 0755, so do we); their
    mtimes are "now" on both sides, so only those are left out of the comparison."""
    layers = [
        ([f("a/b/c/file", b"1"), link("a/b/link", "c"), f("x/y", b"2")], "gzip"),
        ([f("a/b/link/through", b"3"), f("a/b/.wh.c"), f("new/dir/file", b"4")], ""),
    ]
    compare_with_umoci(tmp_path, layers, flavour="docker",
                       skip_mtime=frozenset({"a", "a/b", "a/b/c", "x", "new", "new/dir"}))


@needs_root
def test_single_layer_of_each_compression_matches_umoci(tmp_path: Path) -> None:
    for compression in ("gzip", "zstd", ""):
        case = tmp_path / (compression or "plain")
        compare_with_umoci(case, [([d("d"), f("d/f", BIG[:100_000]), link("d/l", "f")], compression)])


def test_bundle_has_runtime_config_and_the_same_rootfs(tmp_path: Path) -> None:
    config = {
        "config": {
            "User": "bob", "Env": ["PATH=/bin", "A=1"], "Entrypoint": ["/bin/entry"], "Cmd": ["--flag"],
            "WorkingDir": "/work", "Labels": {"org.example": "yes"}, "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            "Volumes": {"/data": {}}, "StopSignal": "SIGQUIT",
        },
    }
    layout = Layout(tmp_path / "layout", build_image([make_layer(base_layer())], config_extra=config))
    bundle = tmp_path / "bundle"
    layout.unpack(bundle, bundle=True)
    assert sorted(os.listdir(bundle)) == ["config.json", "rootfs"]
    assert stat.S_IMODE(os.stat(bundle).st_mode) == 0o700  # as umoci makes it
    assert stat.S_IMODE(os.stat(bundle / "rootfs").st_mode) == 0o751  # the layer's "./" entry
    plain = tmp_path / "plain"
    layout.unpack(plain)
    assert snapshot(bundle / "rootfs") == snapshot(plain)
    spec = json.loads((bundle / "config.json").read_text())
    process = spec["process"]
    assert process["args"] == ["/bin/entry", "--flag"]
    assert process["cwd"] == "/work"
    assert process["env"] == ["PATH=/bin", "TERM=xterm", "A=1", "HOME=/home/bob"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10]}
    assert spec["root"] == {"path": "rootfs"}
    assert spec["annotations"]["org.example"] == "yes"
    assert spec["annotations"]["org.opencontainers.image.exposedPorts"] == "53/udp,80/tcp"
    assert spec["annotations"]["org.opencontainers.image.stopSignal"] == "SIGQUIT"
    assert {"destination": "/data", "type": "tmpfs", "source": "none",
            "options": ["rw", "nosuid", "nodev", "noexec", "relatime"]} in spec["mounts"]
    if ROOT:  # umoci's config for the same image agrees on everything taken from the image
        theirs = json.loads((umoci_unpack(layout.root, tmp_path / "umoci").parent / "config.json").read_text())
        assert theirs["process"]["args"] == process["args"]
        assert theirs["process"]["cwd"] == process["cwd"]
        assert theirs["process"]["env"] == process["env"]
        assert (theirs["process"]["user"]["uid"], theirs["process"]["user"]["gid"]) == (1000, 1000)
        assert theirs["process"]["user"].get("additionalGids") == [10]
        assert theirs["annotations"] == spec["annotations"]
        assert [m["destination"] for m in theirs["mounts"]] == [m["destination"] for m in spec["mounts"]]


def test_unprivileged_unpack_skips_devices_with_a_warning_and_still_applies_modes(tmp_path: Path) -> None:
    from puller.assemble import unpack as unpack_module

    layers = [
        make_layer([d("ro", mode=0o555), f("ro/a", b"a"), Entry("dev-null", "chardev", devmajor=1, devminor=3),
                    f("owned", b"o", uid=1234, gid=1234)]),
        make_layer([f("ro/b", b"written into a read-only directory by a later layer"), f("ro/.wh.a")]),
    ]
    layout = Layout(tmp_path / "layout", build_image(layers))
    warnings: list[str] = []
    dest = tmp_path / "rootfs"
    unpack_module._unpack(layout.manifest, layout.config_raw, layout.open_blob, dest, max_unpacked_bytes=1 << 20,
                          bundle=False, warn=warnings.append, privileged=False)
    assert sorted(os.listdir(dest / "ro")) == ["b"]
    assert stat.S_IMODE(os.lstat(dest / "ro").st_mode) == 0o555
    assert not (dest / "dev-null").exists()
    assert os.lstat(dest / "owned").st_uid == os.geteuid()
    assert any("not running as root" in w for w in warnings)
    assert any("dev-null" in w and "device" in w for w in warnings)


def test_dest_may_be_an_empty_directory_but_not_a_full_one(tmp_path: Path) -> None:
    from puller.errors import UsageError

    layout = Layout(tmp_path / "layout", build_image([make_layer([f("a", b"1")])]))
    empty = tmp_path / "empty"
    empty.mkdir()
    layout.unpack(empty)
    assert (empty / "a").read_bytes() == b"1"
    with pytest.raises(UsageError, match="not empty"):
        layout.unpack(empty)
    assert sorted(os.listdir(tmp_path)) == ["empty", "layout"]  # no staging directory left behind


def test_empty_and_zero_byte_layers(tmp_path: Path) -> None:
    from tests.support.images import Blob, sha256

    zero = Blob("application/vnd.oci.image.layer.v1.tar", b"", sha256(b""), diff_id=sha256(b""))
    layout = Layout(tmp_path / "layout", build_image([make_layer([]), zero, make_layer([f("a", b"1")], "zstd")]))
    layout.unpack(tmp_path / "rootfs")
    assert os.listdir(tmp_path / "rootfs") == ["a"]


def test_the_tree_is_private_while_it_is_built(tmp_path: Path) -> None:
    """Until the last layer is applied, the staging root is 0700 (a world-writable directory from a
    layer must not let other users race the unpack); then it gets its real mode and moves into place."""
    layout = Layout(tmp_path / "layout", build_image([make_layer([d("./", mode=0o755), d("tmp", mode=0o1777)]),
                                                      make_layer([f("tmp/x", b"x")])]))
    seen: list[int] = []
    work = tmp_path / "work"
    work.mkdir()

    def open_blob(digest: Digest) -> BinaryIO:
        for staging in work.iterdir():
            seen.append(stat.S_IMODE(os.stat(staging).st_mode))
        return layout.open_blob(digest)

    unpack_image(layout.manifest, layout.config_raw, open_blob, work / "rootfs", max_unpacked_bytes=1 << 20,
                 warn=print, keep_root_mode=True)
    assert seen == [0o700, 0o700]
    assert stat.S_IMODE(os.stat(work / "rootfs").st_mode) == 0o755
    assert os.listdir(work) == ["rootfs"]


@needs_root
def test_as_root_the_rootfs_stays_private_unless_asked_or_in_a_bundle(tmp_path: Path) -> None:
    """Unpacked as root, setuid-root programs and device nodes are real: other users must not reach
    them. umoci keeps them in a 0700 bundle directory; without --bundle the rootfs itself stays 0700."""
    from puller.assemble import unpack as unpack_module

    layout = Layout(tmp_path / "layout", build_image([make_layer([
        d("./", mode=0o755), d("bin"), f("bin/su", b"#!", mode=0o4755), f("bin/ls", b"#!", mode=0o755)])]))

    def unpack(dest: Path, privileged: bool, **options: bool) -> list[str]:
        warnings: list[str] = []
        unpack_module._unpack(layout.manifest, layout.config_raw, layout.open_blob, dest, max_unpacked_bytes=1 << 20,
                              warn=warnings.append, privileged=privileged, **{"bundle": False, **options})
        return warnings

    def mode(path: Path) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    warnings = unpack(tmp_path / "private", privileged=True)
    assert mode(tmp_path / "private") == 0o700 and mode(tmp_path / "private" / "bin" / "su") == 0o4755
    assert any("left mode 0700" in w and "--keep-root-mode" in w for w in warnings)
    assert not any("0700" in w for w in unpack(tmp_path / "kept", privileged=True, keep_root_mode=True))
    assert mode(tmp_path / "kept") == 0o755
    assert not any("0700" in w for w in unpack(tmp_path / "bundle", privileged=True, bundle=True))
    assert (mode(tmp_path / "bundle"), mode(tmp_path / "bundle" / "rootfs")) == (0o700, 0o755)
    unpack(tmp_path / "user", privileged=False)  # nothing setuid-root to protect: the image's mode
    assert mode(tmp_path / "user") == 0o755


def test_a_bundle_of_a_config_with_wrongly_typed_fields_is_refused(tmp_path: Path) -> None:
    from puller.assemble import ImageConfigError

    cases = [({"config": []}, "config must be an object"),
             ({"config": {"Labels": ["a=b"]}}, "config.Labels must be an object"),
             ({"config": {"Labels": {"a": 1}}}, "Labels must map names to strings"),
             ({"config": {"Cmd": "/bin/sh -c true"}}, "config.Cmd must be a list of strings"),
             ({"config": {"Env": ["A=1", 2]}}, "config.Env must be a list of strings"),
             ({"config": {"User": 1000}}, "config.User must be a string"),
             ({"config": {"Volumes": ["/data"]}}, "config.Volumes must be an object"),
             ({"os": ["linux"]}, "image config os must be a string")]
    for i, (extra, message) in enumerate(cases):
        layout = Layout(tmp_path / f"layout{i}", build_image([make_layer([f("a", b"1")])], config_extra=extra))
        with pytest.raises(ImageConfigError, match=message):
            layout.unpack(tmp_path / f"bundle{i}", bundle=True)
        assert not (tmp_path / f"bundle{i}").exists()
