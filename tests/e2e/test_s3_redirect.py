"""Blob downloads redirected to presigned S3 URLs, with real clients and authentication on.

A replica with `storage.s3.redirect: true` and auth enabled answers blob GETs with 307 to a
presigned URL. S3 (SeaweedFS) sits behind a recording proxy, so the test sees every request that
reached S3 and its headers: each client (skopeo, podman, the puller) must fetch every layer from
a presigned URL, and none of those requests may carry an `Authorization` header (the registry
token stays with the registry; the signature in the URL is the only credential).

The presigned URLs name the S3 endpoint `localhost` while the registry is `127.0.0.1`: different
host names, as in a real deployment (clients decide by host whether their `Authorization` header may
follow a redirect, and some HTTP clients compare host names without the port).
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.registry.test_auth_api import SERVICE, auth_config
from tests.support.images import Entry, Image, build_image, make_layer, write_oci_layout
from tests.support.s3replicas import MiB, RecordingProxy, Seen, s3_config, s3_env
from tests.support.s3servers import S3Server
from tests.support.servers import REPO_ROOT, RunningServer, start_cargobay

from .clients import Engine, Skopeo, dir_layout_contents, engine_image, expected_blobs, read_mounted_file
from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures

PASSWORDS = {"alice": "alice-Redirect-1", "admin": "admin-Redirect-2"}
RULES = """\
rules:
  - users: [alice]
    repositories: ["team-a/*"]
    actions: [pull, push]
"""
REPO = "team-a/redirected"


@pytest.fixture(scope="module")
def proxy(seaweedfs: S3Server) -> Iterator[RecordingProxy]:  # noqa: F811
    recorder = RecordingProxy(seaweedfs.endpoint_url)
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
def redirecting(tmp_path_factory: pytest.TempPathFactory, seaweedfs: S3Server, s3_bucket: str,  # noqa: F811
                proxy: RecordingProxy) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("redirecting")
    config = auth_config(workdir, PASSWORDS, RULES)
    config["storage"] = s3_config(seaweedfs, s3_bucket, endpoint_url=proxy.url("localhost"), redirect=True,
                                  part_size=5 * MiB)["storage"]
    config["log"] = {"level": "info", "access": True}  # (debug would log every botocore request)
    server = start_cargobay(workdir, config=config, env=s3_env(seaweedfs))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image(redirecting: RunningServer, skopeo: Skopeo, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """team-a/redirected:v1, pushed by skopeo with alice's credentials: a 6 MiB layer (two S3
    parts) and a small one."""
    big = make_layer([Entry("blob", "dir", mode=0o755), ("blob/noise.bin", random.Random(7).randbytes(6 * MiB))])
    small = make_layer([("etc/motd", b"served from S3\n")])
    built = build_image([big, small])
    layout = write_oci_layout(tmp_path_factory.mktemp("redirect-layout"), built, "v1")
    skopeo.copy(f"oci:{layout}:v1", f"docker://{redirecting.hostport}/{REPO}:v1", "--dest-creds", creds("alice"),
                "--preserve-digests")
    return built


def creds(user: str) -> str:
    return f"{user}:{PASSWORDS[user]}"


def presigned_fetches(proxy: RecordingProxy, image: Image) -> list[Seen]:
    """The requests with a presigned URL, after checking every layer was fetched through one and
    that none carried credentials of its own."""
    fetched = [seen for seen in proxy.seen if seen.presigned]
    for layer in image.layers:
        hex_ = layer.digest.split(":")[1]
        hits = [seen for seen in fetched if seen.path.endswith(f"/v1/blobs/sha256/{hex_[:2]}/{hex_}/data")]
        assert hits, f"no presigned fetch of {layer.digest}; S3 saw {[(s.method, s.path) for s in proxy.seen]}"
        assert all(seen.status in (200, 206) for seen in hits), [seen.status for seen in hits]
    for seen in fetched:
        assert "authorization" not in seen.headers, f"a presigned request carried Authorization: {seen.path}"
        assert seen.method in ("GET", "HEAD")
        assert int(seen.query["X-Amz-Expires"][0]) <= 1200
    return fetched


def test_registry_answers_307_to_a_presigned_url_and_keeps_its_own_signatures(
        redirecting: RunningServer, image: Image, proxy: RecordingProxy) -> None:
    token = httpx.get(f"{redirecting.url}/auth/token", auth=("alice", PASSWORDS["alice"]),
                      params={"service": SERVICE, "scope": f"repository:{REPO}:pull"}).json()["token"]
    layer = image.layers[0]
    r = httpx.get(f"{redirecting.url}/v2/{REPO}/blobs/{layer.digest}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 307, r.text
    location = r.headers["Location"]
    assert location.startswith(proxy.url("localhost") + "/") and "X-Amz-Signature=" in location
    assert token not in location
    # The URL alone is enough: no credentials, straight from S3, the right bytes.
    assert httpx.get(location).content == layer.data
    # Without credentials the registry does not redirect at all.
    assert httpx.get(f"{redirecting.url}/v2/{REPO}/blobs/{layer.digest}").status_code == 401
    # The registry's own S3 requests are signed in the header (so the proxy does see that header).
    assert any(seen.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256") for seen in proxy.seen)
    # Health needs no credentials even here.
    health = httpx.get(f"{redirecting.url}/healthz")
    assert health.status_code == 200 and health.json() == {"storage": "ok"}


def test_skopeo_follows_the_redirect_without_forwarding_credentials(
        redirecting: RunningServer, image: Image, proxy: RecordingProxy, skopeo: Skopeo, tmp_path: Path) -> None:
    proxy.clear()
    out = tmp_path / "out"
    skopeo.copy(f"docker://{redirecting.hostport}/{REPO}:v1", f"dir:{out}", "--src-creds", creds("alice"))
    assert dir_layout_contents(out) == expected_blobs(image)
    presigned_fetches(proxy, image)
    # skopeo asked the registry for each layer, and the registry answered with the redirect (recorded
    # by a proxy of the test's own in front of the registry; no server log is read).
    front = RecordingProxy(redirecting.url)
    try:
        again = tmp_path / "again"
        skopeo.copy(f"docker://127.0.0.1:{front.port}/{REPO}:v1", f"dir:{again}", "--src-creds", creds("alice"))
        assert dir_layout_contents(again) == expected_blobs(image)
        answered = {(seen.method, seen.path): seen.status for seen in front.seen}
        for layer in image.layers:
            assert answered.get(("GET", f"/v2/{REPO}/blobs/{layer.digest}")) == 307, answered
    finally:
        front.close()


def test_podman_pull_follows_the_redirect_without_forwarding_credentials(
        redirecting: RunningServer, image: Image, proxy: RecordingProxy, make_podman: Callable[[str], Engine]) -> None:
    proxy.clear()
    podman = make_podman("redirect")
    ref = f"{redirecting.hostport}/{REPO}:v1"
    podman("pull", "--tls-verify=false", "--creds", creds("alice"), ref)
    assert "sha256:" + engine_image(podman, ref)["Id"] == image.config.digest
    assert read_mounted_file(podman, ref, "etc/motd") == b"served from S3\n"
    presigned_fetches(proxy, image)


def test_puller_follows_the_redirect_without_forwarding_credentials(
        redirecting: RunningServer, image: Image, proxy: RecordingProxy, tmp_path: Path) -> None:
    proxy.clear()
    auth_file = tmp_path / "auth.json"
    encoded = base64.b64encode(creds("alice").encode()).decode()
    auth_file.write_text(json.dumps({"auths": {redirecting.hostport: {"auth": encoded}}}))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "REGISTRY_AUTH_FILE": str(auth_file),
           "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    store = tmp_path / "store"
    ref = f"{redirecting.hostport}/{REPO}:v1"
    run = subprocess.run([sys.executable, "-m", "puller", "--store", str(store), "fetch", "--plain-http", ref],
                         capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    shown = subprocess.run([sys.executable, "-m", "puller", "--store", str(store), "--json", "inspect", ref],
                           capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert image.digest in shown.stdout and image.config.digest in shown.stdout
    presigned_fetches(proxy, image)
