"""Fast tests of the puller's pure parts: challenges, config, credentials lookup, platform choice,
Retry-After, progress rendering."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from distclient import Endpoint, credentials, parse_challenges
from distclient import retry_after as _retry_after
from ocispec.manifest import parse_manifest
from ocispec.platform import Platform
from puller.config import load_config, parse_config
from puller.errors import NotFound, UsageError
from puller.progress import Event, JsonRenderer, PlainRenderer, TtyRenderer
from puller.resolve import parse_ref, select_platform
from puller.space import DEFAULT_RESERVE, Reserve, parse_reserve, parse_size
from tests.support import images as im


def test_parse_challenges() -> None:
    header = ('Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push", '
              'Basic realm="x"')
    assert parse_challenges(header) == [
        ("bearer", {"realm": "https://auth.example/token", "service": "reg.example",
                    "scope": "repository:a/b:pull,push"}),
        ("basic", {"realm": "x"}),
    ]
    assert parse_challenges('Bearer realm=unquoted, error="invalid_token"') == [
        ("bearer", {"realm": "unquoted", "error": "invalid_token"})]
    assert parse_challenges("") == []


def test_config_endpoints_and_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config({"hosts": {
        "docker.io": {"mirrors": ["http://central:5000", {"url": "https://m2/prefix", "ca_file": "/ca.pem"}]},
        "reg.local:5000": {"insecure": True, "mirrors": ["http://m"], "fallback": False},
        "private.example": {"ca_file": "/private.pem"},
    }})
    assert config.endpoints("docker.io") == [
        Endpoint("http://central:5000", "docker.io"), Endpoint("https://m2/prefix", "docker.io", "/ca.pem"),
        Endpoint("https://registry-1.docker.io")]
    assert config.endpoints("reg.local:5000") == [Endpoint("http://m", "reg.local:5000")]
    assert config.endpoints("private.example") == [Endpoint("https://private.example", None, "/private.pem")]
    assert config.endpoints("other:5000", plain_http=True) == [Endpoint("http://other:5000")]
    # Loopback registries not in the config: HTTPS first, then plain HTTP, as Docker does.
    assert config.endpoints("localhost:5000") == [Endpoint("https://localhost:5000"), Endpoint("http://localhost:5000")]
    assert config.endpoints("127.0.0.1:5000", plain_http=True) == [Endpoint("http://127.0.0.1:5000")]
    for bad in ({"hosts": {"h": {"fallback": "yes"}}}, {"hosts": {"h": {"mirrors": [3]}}}, {"jobs": 0},
                {"hosts": {"h": {"mirrors": ["ftp://x"]}}}):
        with pytest.raises(UsageError):
            parse_config(bad)

    # Where it comes from: explicit, then $PULLER_CONFIG, else system overlaid by per-user.
    user = tmp_path / "xdg" / "puller" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('jobs = 7\n[hosts."a"]\ninsecure = true\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PULLER_CONFIG", raising=False)
    assert load_config().jobs == 7 and load_config().hosts["a"].insecure
    env_file = tmp_path / "env.toml"
    env_file.write_text("jobs = 3\n")
    monkeypatch.setenv("PULLER_CONFIG", str(env_file))
    assert load_config().jobs == 3
    assert load_config(user).jobs == 7
    with pytest.raises(UsageError):
        load_config(tmp_path / "missing.toml")
    env_file.write_text("jobs = [")
    with pytest.raises(UsageError):
        load_config()


def test_credentials_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def auth(user: str) -> dict[str, str]:
        return {"auth": base64.b64encode(f"{user}:pw".encode()).decode()}

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": auth("hub"), "h:5000": auth("docker"), "tokenhost": {"identitytoken": "tok"}}}))
    assert credentials.lookup("docker.io") == credentials.Credentials("hub", "pw")
    assert credentials.lookup("registry-1.docker.io").username == "hub"
    assert credentials.lookup("tokenhost").identity_token == "tok"
    assert credentials.lookup("nowhere") is None
    containers = tmp_path / ".config" / "containers" / "auth.json"
    containers.parent.mkdir(parents=True)
    containers.write_text(json.dumps({"auths": {"h:5000": auth("containers")}}))
    assert credentials.lookup("h:5000").username == "containers"
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({"auths": {"http://h:5000": auth("explicit")}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(explicit))
    assert credentials.lookup("h:5000").username == "explicit"
    assert "pw" not in repr(credentials.lookup("h:5000"))
    # login writes the explicit file; docker.io under its own key in Docker's file.
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    credentials.save("docker.io", credentials.Credentials("new", "pw2"))
    data = json.loads((tmp_path / ".docker" / "config.json").read_text())
    assert data["auths"]["https://index.docker.io/v1/"] == auth("new") | {"auth": base64.b64encode(b"new:pw2").decode()}


def test_select_platform() -> None:
    images = [im.simple_image(p, p) for p in ("linux/amd64", "linux/arm/v6", "linux/arm64/v8", "windows/amd64")]
    attestation = im.build_image([], "unknown/unknown")
    index = parse_manifest(im.build_index([attestation, *images]).manifest)
    pick = lambda p: str(select_platform(index, Platform.parse(p)).digest)  # noqa: E731
    assert pick("linux/amd64") == images[0].digest
    assert pick("linux/amd64/v3") == images[0].digest  # amd64/v3 runs plain amd64
    assert pick("linux/arm/v7") == images[1].digest
    assert pick("linux/aarch64") == images[2].digest
    assert pick("windows/amd64") == images[3].digest
    with pytest.raises(NotFound) as info:
        pick("linux/arm/v5")
    assert "unknown" not in info.value.message


def test_reference_normalisation() -> None:
    assert str(parse_ref("redis:7")) == "docker.io/library/redis:7"
    assert str(parse_ref("index.docker.io/me/app")) == "docker.io/me/app:latest"
    assert str(parse_ref("localhost:5000/x")) == "localhost:5000/x:latest"
    digest = "sha256:" + "a" * 64
    assert parse_ref(f"reg:5000/x:t@{digest}").identifier == digest
    with pytest.raises(UsageError):
        parse_ref("ubuntu/UPPER")


def test_retry_after() -> None:
    assert _retry_after("2") == 2.0
    assert _retry_after("9999") == 60.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_renderers() -> None:
    events = [Event("resolved", {"reference": "r", "digest": "sha256:" + "a" * 64, "platform": "linux/amd64",
                                 "layers": 1, "size": 10}),
              Event("blob-start", {"digest": "sha256:" + "b" * 64, "size": 10, "role": "layer", "offset": 0}),
              Event("blob-progress", {"digest": "sha256:" + "b" * 64, "done": 10, "size": 10}),
              Event("blob-done", {"digest": "sha256:" + "b" * 64, "size": 10, "role": "layer"}),
              Event("done", {"reference": "r", "digest": "sha256:" + "a" * 64, "downloaded": 10, "elapsed": 0.1})]
    plain = "".join(PlainRenderer().handle(e) for e in events)
    assert "bbbbbbbbbbbb: downloading 10 B" in plain and "Digest: sha256:" in plain and "\x1b" not in plain
    assert "".join(PlainRenderer(quiet=True).handle(e) for e in events) == ""
    lines = "".join(JsonRenderer().handle(e) for e in events).splitlines()
    assert [json.loads(line)["event"] for line in lines] == [e.kind for e in events]
    tty = "".join(TtyRenderer(interval=0).handle(e) for e in events)
    assert "\x1b[2K" in tty and "total" in tty and "verified" in tty


def test_small_blobs_are_written_outside_the_layout_and_their_rename_is_synced(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers of the OCI layout (skopeo, umoci) never see a temporary file in blobs/, and a blob's
    rename reaches the disk with its directory."""
    import os

    from ocispec.digest import Digest
    from puller.store import Store

    store = Store(tmp_path)
    renames: list[tuple[str, str]] = []
    synced: list[str] = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((str(a), str(b))), real_replace(a, b))[1])
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
    data = b'{"config": true}'
    store.put_blob(data, Digest.of(data))
    [(source, target)] = renames
    assert os.path.dirname(source) == str(tmp_path / ".puller" / "tmp")
    assert target == str(store.blob_path(Digest.of(data)))
    assert str(tmp_path / "blobs" / "sha256") in synced
    assert os.listdir(tmp_path / ".puller" / "tmp") == []


def test_sizes_and_free_space_reserves() -> None:
    assert [parse_size(t) for t in ("20G", "2GiB", "500MB", "1.5g", "4096", "1 KiB")] == \
        [20 << 30, 2 << 30, 500 << 20, 3 << 29, 4096, 1024]
    for bad in ("", "lots", "-1G", "nan", "inf", "1x"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_reserve("10%") == Reserve(10.0, 0) and parse_reserve("2GiB") == Reserve(0.0, 2 << 30)
    assert parse_reserve(0).bytes_for(1 << 40) == 0
    assert DEFAULT_RESERVE.bytes_for(100 << 30) == 5 << 30  # 5% of 100 GiB
    assert DEFAULT_RESERVE.bytes_for(4 << 30) == 1 << 30  # at least 1 GiB
    for bad in ("100%", "-5%", "x%", "many"):
        with pytest.raises(ValueError):
            parse_reserve(bad)
    assert parse_config({"min_free_space": "3%"}).min_free_space == Reserve(3.0, 0)
    assert parse_config({}).min_free_space == DEFAULT_RESERVE


def test_token_realms_match_scheme_host_port_and_path() -> None:
    ep = parse_config({"hosts": {"r:5000": {"insecure": True, "token_realms": ["http://Auth:5001/token"]}}}
                      ).host_endpoint("r:5000")
    assert ep.trusts_realm("http://auth:5001/token?scope=x") and ep.trusts_realm("http://auth:5001/token/")
    assert not ep.trusts_realm("http://auth:5002/token") and not ep.trusts_realm("http://auth:5001/other")
    assert not ep.trusts_realm("https://auth:5001/token") and not ep.trusts_realm("http://evil:5001/token")
