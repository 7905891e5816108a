"""Thin wrappers around the real clients the end-to-end tests drive (skopeo, podman, buildah), plus the
plain-HTTP helpers the tests use to check what those clients did.

Every podman/buildah instance gets its own storage (`--root`, `--runroot`, `vfs` driver), its own
containers.conf/registries.conf/auth file and tmpdir, so tests never touch /var/lib/containers/storage
and cannot reach anything but the loopback registries they name. Everything runs as root here, with
no systemd and possibly without cgroup delegation: hence `--cgroup-manager=cgroupfs`,
`--events-backend=file` and `BUILDAH_ISOLATION=chroot`. No test runs a container; images are only
pulled, pushed, mounted (vfs: a plain directory) and committed. podman refuses a `--runroot` longer than
50 characters, so runroots are short private directories in /tmp, removed when a test ends.

One piece of client state is shared: containers/image's blob info cache
(/var/lib/containers/cache/blob-info-cache-v1.boltdb for root; no flag or variable moves it). It is
keyed by registry host:port, and every module server gets a fresh port, so runs do not leak into each
other; within a run it is what makes skopeo mount blobs across repositories, which one test relies on.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.images import Image, Index

TIMEOUT = 180  # seconds for any one client command

CONTAINERS_CONF = """\
[containers]
netns = "host"
cgroups = "disabled"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

REGISTRIES_CONF = """\
# Only fully qualified loopback references are used; nothing may resolve to docker.io.
unqualified-search-registries = []
short-name-mode = "disabled"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{root}"
runroot = "{runroot}"
"""


class CommandFailed(AssertionError):
    pass


def run(argv: Sequence[str], env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a client command; on failure the assertion shows the command, exit code and both streams."""
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        raise CommandFailed(f"command failed with exit code {proc.returncode}: {' '.join(argv)}\n"
                            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return proc


def client_env(confdir: Path) -> dict[str, str]:
    """Environment that points every containers/* library at private config files under `confdir`."""
    confdir.mkdir(parents=True, exist_ok=True)
    (confdir / "containers.conf").write_text(CONTAINERS_CONF)
    (confdir / "registries.conf").write_text(REGISTRIES_CONF)
    auth = confdir / "auth.json"
    if not auth.exists():
        auth.write_text('{"auths": {}}')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERS_", "REGISTRY_AUTH", "BUILDAH_"))}
    env.update({
        "CONTAINERS_CONF": str(confdir / "containers.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(confdir / "registries.conf"),
        "REGISTRY_AUTH_FILE": str(auth),
        "BUILDAH_ISOLATION": "chroot",
        "TMPDIR": str(confdir),
    })
    return env


# -- skopeo -----------------------------------------------------------------------------------------
@dataclass
class Skopeo:
    binary: str
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self.binary, *args], env=self.env, check=check)

    def copy(self, src: str, dest: str, *flags: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        tls = []
        if src.startswith("docker://"):
            tls.append("--src-tls-verify=false")
        if dest.startswith("docker://"):
            tls.append("--dest-tls-verify=false")
        return self("copy", "--quiet", *tls, *flags, src, dest, check=check)

    def inspect_raw(self, ref: str, *flags: str) -> bytes:
        """The exact bytes the registry served (no newline translation)."""
        argv = [self.binary, "inspect", "--tls-verify=false", "--raw", *flags, ref]
        proc = subprocess.run(argv, env=self.env, capture_output=True, timeout=TIMEOUT)
        if proc.returncode != 0:
            raise CommandFailed(f"command failed with exit code {proc.returncode}: {' '.join(argv)}\n"
                                f"--- stderr ---\n{proc.stderr.decode(errors='replace')[-4000:]}")
        return proc.stdout

    def inspect(self, ref: str, *flags: str) -> dict:
        return json.loads(self("inspect", "--tls-verify=false", *flags, ref).stdout)

    def list_tags(self, ref: str) -> list[str]:
        return json.loads(self("list-tags", "--tls-verify=false", ref).stdout)["Tags"]

    def delete(self, ref: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self("delete", "--tls-verify=false", ref, check=check)


# -- podman / buildah ------------------------------------------------------------------------------
@dataclass
class Engine:
    """podman or buildah with a private vfs storage under `home`."""

    binary: str
    home: Path
    extra_global: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = self.home / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        # podman refuses a runroot longer than 50 characters, and pytest's tmp_path is longer: use a short
        # private directory in /tmp, removed by close()
        self.runroot = Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp" if os.path.isdir("/tmp") else None))
        self.env = client_env(self.home / "conf")
        storage_conf = self.home / "conf" / "storage.conf"
        storage_conf.write_text(STORAGE_CONF.format(root=self.root, runroot=self.runroot))
        self.env["CONTAINERS_STORAGE_CONF"] = str(storage_conf)

    def close(self) -> None:
        shutil.rmtree(self.runroot, ignore_errors=True)

    @property
    def global_flags(self) -> list[str]:
        return ["--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "vfs", *self.extra_global]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self.binary, *self.global_flags, *args], env=self.env, check=check)


def podman(binary: str, home: Path) -> Engine:
    engine = Engine(binary, home, ["--cgroup-manager=cgroupfs", "--events-backend=file"])
    tmp = engine.runroot / "libpod"  # podman's --tmpdir (default /run/libpod), kept private too
    tmp.mkdir()
    engine.extra_global += ["--tmpdir", str(tmp)]
    return engine


def buildah(binary: str, home: Path) -> Engine:
    return Engine(binary, home)


def engine_image(engine: Engine, ref: str) -> dict:
    """`podman image inspect` of one image."""
    return json.loads(engine("image", "inspect", ref).stdout)[0]


def read_mounted_file(engine: Engine, ref: str, path: str) -> bytes:
    """Mount an image's rootfs (with vfs: a plain directory) and read one file from it."""
    mountpoint = engine("image", "mount", ref).stdout.strip()
    try:
        return (Path(mountpoint) / path.lstrip("/")).read_bytes()
    finally:
        engine("image", "unmount", ref)


# -- the registry's side of things, over plain HTTP ------------------------------------------------
def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Fetched:
    body: bytes
    content_type: str
    digest_header: str


def get_manifest(base_url: str, repo: str, reference: str) -> Fetched:
    accept = ", ".join([
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json"])
    r = httpx.get(f"{base_url}/v2/{repo}/manifests/{reference}", headers={"Accept": accept}, timeout=30)
    assert r.status_code == 200, f"GET manifest {repo}:{reference} → {r.status_code} {r.text[:500]}"
    return Fetched(r.content, r.headers.get("content-type", ""), r.headers.get("docker-content-digest", ""))


def manifest_status(base_url: str, repo: str, reference: str) -> int:
    return httpx.head(f"{base_url}/v2/{repo}/manifests/{reference}", timeout=30).status_code


def get_blob(base_url: str, repo: str, digest: str) -> bytes:
    r = httpx.get(f"{base_url}/v2/{repo}/blobs/{digest}", timeout=60, follow_redirects=True)
    assert r.status_code == 200, f"GET blob {repo}@{digest} → {r.status_code} {r.text[:500]}"
    assert sha256_of(r.content) == digest, f"blob {digest} served with other bytes"
    return r.content


def decompress(data: bytes, media_type: str) -> bytes:
    if media_type.endswith(("+gzip", ".gzip")):
        return gzip.decompress(data)
    if media_type.endswith("+zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def tar_files(tar_bytes: bytes) -> dict[str, bytes]:
    """Regular files of a layer tar, by normalised path."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                out[member.name.lstrip("./").lstrip("/")] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return out


@dataclass
class PushedImage:
    manifest: dict
    raw: bytes
    config: dict
    config_digest: str
    layers: list[bytes]  # uncompressed layer tars, in order


def verify_pushed_image(base_url: str, repo: str, reference: str) -> PushedImage:
    """Fetch an image manifest and everything it references through the API; check every digest and size,
    and that each layer uncompresses to the diff_id its config names."""
    fetched = get_manifest(base_url, repo, reference)
    assert fetched.digest_header == sha256_of(fetched.body)
    manifest = json.loads(fetched.body)
    assert fetched.content_type == manifest.get("mediaType", fetched.content_type)
    config_bytes = get_blob(base_url, repo, manifest["config"]["digest"])
    assert len(config_bytes) == manifest["config"]["size"]
    config = json.loads(config_bytes)
    layers = []
    for desc in manifest["layers"]:
        blob = get_blob(base_url, repo, desc["digest"])
        assert len(blob) == desc["size"], desc
        layers.append(decompress(blob, desc["mediaType"]))
    assert [sha256_of(t) for t in layers] == config["rootfs"]["diff_ids"]
    return PushedImage(manifest, fetched.body, config, manifest["config"]["digest"], layers)


# -- local layouts ---------------------------------------------------------------------------------
def write_dir_layout(root: Path, target: Image | Index) -> Path:
    """A `dir:` transport directory holding `target` (skopeo 1.9's `oci:` transport only finds OCI media
    types in index.json, so Docker schema 2 images go in and out through `dir:`)."""
    root.mkdir(parents=True, exist_ok=True)
    images = target.images if isinstance(target, Index) else (target,)
    for image in images:
        for blob in image.blobs():
            (root / blob.digest.split(":")[1]).write_bytes(blob.data)
        if isinstance(target, Index):
            (root / (image.digest.split(":")[1] + ".manifest.json")).write_bytes(image.manifest)
    (root / "manifest.json").write_bytes(target.manifest)
    (root / "version").write_text("Directory Transport Version: 1.1\n")
    return root


def expected_blobs(target: Image | Index) -> dict[str, bytes]:
    """Every blob and manifest `target` consists of, by digest."""
    out: dict[str, bytes] = {target.digest: target.manifest}
    for image in target.images if isinstance(target, Index) else (target,):
        out[image.digest] = image.manifest
        for blob in image.blobs():
            out[blob.digest] = blob.data
    return out


def oci_layout_contents(root: Path) -> tuple[list[dict], dict[str, bytes]]:
    """index.json's manifest descriptors and every blob of an OCI layout, by digest (hashes checked)."""
    index = json.loads((root / "index.json").read_text())
    blobs = {}
    for path in (root / "blobs" / "sha256").iterdir():
        data = path.read_bytes()
        digest = "sha256:" + path.name
        assert sha256_of(data) == digest, f"{path} does not hash to its name"
        blobs[digest] = data
    return index["manifests"], blobs


def dir_layout_contents(root: Path) -> dict[str, bytes]:
    """Every blob and manifest of a `dir:` directory, by digest."""
    out = {}
    for path in root.iterdir():
        if path.name == "version" or path.name.startswith("signature"):
            continue
        data = path.read_bytes()
        out[sha256_of(data)] = data
        if path.name != "manifest.json" and not path.name.endswith(".manifest.json"):
            assert "sha256:" + path.name == sha256_of(data), f"{path} does not hash to its name"
    return out


def oci_archive(layout: Path, archive: Path) -> Path:
    """Tar an OCI layout into an oci-archive (deterministically)."""
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(layout)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return archive
