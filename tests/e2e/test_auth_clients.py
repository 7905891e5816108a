"""Auth end to end: skopeo and podman (with `--creds` and with `login`) against a real `registry
serve` with auth on, robot accounts, mounts the caller may not make, and Debian's `docker-registry`
(CNCF Distribution 2.8) trusting tokens Cargobay issues."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.registry.test_auth_api import ISSUER, PASSWORDS, auth_config, bearer, get_token
from tests.support.images import push_image, simple_image, write_oci_layout
from tests.support.servers import REPO_ROOT, RunningServer, serving, start_cargobay, start_distribution
from tests.support.tools import require_tool

from .clients import Engine, Skopeo, client_env, oci_layout_contents

DIST_SERVICE = "distribution-interop"
RULES = """\
anonymous_pull: ["public/*"]
rules:
  - users: [alice]
    repositories: ["team-a/*"]
    actions: [pull, push]
  - users: [bob]
    repositories: ["team-a/*"]
    actions: [pull]
  - users: [carol]
    repositories: ["team-c/*"]
    actions: [pull, push]
  - users: [admin]
    repositories: ["*"]
    actions: ["*"]
    catalog: true
"""
DENIED = re.compile(r"denied|403|unauthorized|authentication required|401", re.I)


@pytest.fixture(scope="module")
def authbay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("authbay")
    config = auth_config(workdir, PASSWORDS, RULES, token={"extra_services": DIST_SERVICE})
    yield from serving(start_cargobay(workdir, config=config))


@pytest.fixture(scope="module")
def public_image(authbay: RunningServer) -> str:
    """public/base:v1, pushed by admin over plain HTTP; anyone may pull it."""
    image = simple_image("auth-e2e-public", layer_count=1)
    token = get_token(authbay.url, "admin", "repository:public/base:pull,push")
    with httpx.Client(headers=bearer(token), timeout=60) as c:
        push_image(c, authbay.url, "public/base", image, "v1")
    return image.digest


def creds(user: str) -> str:
    return f"{user}:{PASSWORDS[user]}"


def refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, f"expected a refusal, got success:\n{result.stdout}\n{result.stderr}"
    assert DENIED.search(result.stderr), result.stderr
    return result.stderr


def ref(server: RunningServer, repo: str) -> str:
    return f"docker://{server.hostport}/{repo}"


# -- skopeo --------------------------------------------------------------------------------------
def test_skopeo_with_creds_pushes_and_pulls_where_allowed(authbay: RunningServer, public_image: str, skopeo: Skopeo,
                                                          tmp_path: Path) -> None:
    image = simple_image("auth-e2e-skopeo", layer_count=2)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    skopeo.copy(f"oci:{layout}:v1", ref(authbay, "team-a/app:v1"), "--dest-creds", creds("alice"), "--preserve-digests")
    skopeo.copy(ref(authbay, "team-a/app:v1"), f"oci:{tmp_path / 'out'}:v1", "--src-creds", creds("bob"))
    assert [d["digest"] for d in oci_layout_contents(tmp_path / "out")[0]] == [image.digest]

    refused(skopeo.copy(f"oci:{layout}:v1", ref(authbay, "team-a/bob:v1"), "--dest-creds", creds("bob"), check=False))
    refused(skopeo.copy(f"oci:{layout}:v1", ref(authbay, "team-a/anon:v1"), check=False))
    refused(skopeo.copy(f"oci:{layout}:v1", ref(authbay, "team-a/app:v2"), "--dest-creds", "alice:wrong", check=False))
    refused(skopeo.copy(ref(authbay, "team-a/app:v1"), f"oci:{tmp_path / 'no'}:v1", "--src-creds", creds("carol"),
                        check=False))

    # anonymous: pull public/*, push nothing
    skopeo.copy(ref(authbay, "public/base:v1"), f"oci:{tmp_path / 'pub'}:v1")
    assert [d["digest"] for d in oci_layout_contents(tmp_path / "pub")[0]] == [public_image]
    refused(skopeo.copy(f"oci:{layout}:v1", ref(authbay, "public/mine:v1"), check=False))


def test_skopeo_login_then_copy(authbay: RunningServer, tmp_path: Path) -> None:
    skopeo = Skopeo(require_tool("skopeo"), client_env(tmp_path / "conf"))
    failed = skopeo("login", "--tls-verify=false", "-u", "alice", "-p", "wrong", authbay.hostport, check=False)
    assert failed.returncode != 0
    skopeo("login", "--tls-verify=false", "-u", "alice", "-p", PASSWORDS["alice"], authbay.hostport)
    stored = json.loads(Path(skopeo.env["REGISTRY_AUTH_FILE"]).read_text())["auths"]
    assert authbay.hostport in stored
    image = simple_image("auth-e2e-login", layer_count=1)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    skopeo.copy(f"oci:{layout}:v1", ref(authbay, "team-a/login:v1"), "--preserve-digests")
    assert skopeo.inspect_raw(ref(authbay, "team-a/login:v1")) == image.manifest
    refused(skopeo.copy(f"oci:{layout}:v1", ref(authbay, "team-c/login:v1"), check=False))  # alice: not team-c
    skopeo("logout", authbay.hostport)
    refused(skopeo.copy(f"oci:{layout}:v1", ref(authbay, "team-a/login:v2"), check=False))


def test_robot_account_cannot_read_another_repository(authbay: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    workdir = authbay.log_path.parent
    out = subprocess.run([sys.executable, "-m", "registry", "robot", "create", "robot-e2e", "--repo", "robots/only",
                          "--actions", "pull,push", "--htpasswd", str(workdir / "htpasswd"),
                          "--rules", str(workdir / "rules.yaml")], capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=60, check=True)
    robot = f"robot-e2e:{out.stdout.strip()}"
    image = simple_image("auth-e2e-robot", layer_count=1)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    skopeo.copy(f"oci:{layout}:v1", ref(authbay, "team-a/robot-target:v1"), "--dest-creds", creds("alice"))
    time.sleep(1.1)  # the server re-reads the auth files at most once a second
    skopeo.copy(f"oci:{layout}:v1", ref(authbay, "robots/only:v1"), "--dest-creds", robot, "--preserve-digests")
    skopeo.copy(ref(authbay, "robots/only:v1"), f"oci:{tmp_path / 'out'}:v1", "--src-creds", robot)
    refused(skopeo.copy(ref(authbay, "team-a/robot-target:v1"), f"oci:{tmp_path / 'no'}:v1", "--src-creds", robot,
                        check=False))
    refused(skopeo("inspect", "--tls-verify=false", "--creds", robot, ref(authbay, "team-a/robot-target:v1"),
                   check=False))
    refused(skopeo.copy(f"oci:{layout}:v1", ref(authbay, "robots/other:v1"), "--dest-creds", robot, check=False))
    assert out.stdout.strip() not in authbay.log()


def test_mount_from_a_repository_the_caller_cannot_pull_is_an_upload(authbay: RunningServer, skopeo: Skopeo,
                                                                      tmp_path: Path) -> None:
    """skopeo copies team-a → team-c on the same registry: with carol's credentials on the destination
    (she may not pull team-a) the mount is declined and the layers are uploaded; with alice's on a
    team-a destination they are mounted."""
    image = simple_image("auth-e2e-mount", layer_count=2)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    skopeo.copy(f"oci:{layout}:v1", ref(authbay, "team-a/mount-src:v1"), "--dest-creds", creds("alice"),
                "--preserve-digests")
    skopeo.copy(ref(authbay, "team-a/mount-src:v1"), ref(authbay, "team-c/mount-dst:v1"), "--src-creds", creds("alice"),
                "--dest-creds", creds("carol"), "--preserve-digests")
    skopeo.copy(ref(authbay, "team-a/mount-src:v1"), ref(authbay, "team-a/mount-dst:v1"), "--src-creds", creds("alice"),
                "--dest-creds", creds("alice"), "--preserve-digests")
    log = authbay.log()
    for layer in image.layers:
        digest = re.escape(quote(layer.digest, safe=""))
        attempts = re.findall(rf'"POST /v2/team-c/mount-dst/blobs/uploads/\?[^"]*mount={digest}[^"]*" (\d+)', log)
        assert "201" not in attempts, "carol mounted a blob from a repository she cannot pull"
        assert re.search(rf'"PUT /v2/team-c/mount-dst/blobs/uploads/[^"]*digest={digest}[^"]*" 201', log), \
            "the layer was not uploaded to team-c"
        assert re.search(rf'"POST /v2/team-a/mount-dst/blobs/uploads/\?[^"]*mount={digest}[^"]*" 201', log), \
            "alice's copy did not mount"
    carol = get_token(authbay.url, "carol", "repository:team-c/mount-dst:pull")
    for blob in image.blobs():
        r = httpx.get(f"{authbay.url}/v2/team-c/mount-dst/blobs/{blob.digest}", headers=bearer(carol))
        assert r.status_code == 200 and r.content == blob.data


# -- podman --------------------------------------------------------------------------------------
def test_podman_creds_login_and_anonymous(authbay: RunningServer, public_image: str,
                                          make_podman: Callable[[str], Engine], tmp_path: Path) -> None:
    image = simple_image("auth-e2e-podman", layer_count=1)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    host = authbay.hostport
    alice = make_podman("alice")
    alice("pull", f"oci:{layout}:v1")
    local = alice("images", "--quiet").stdout.split()[0]
    alice("push", "--tls-verify=false", "--creds", creds("alice"), local, f"docker://{host}/team-a/pod:v1")
    refused(alice("push", "--tls-verify=false", "--creds", creds("bob"), local, f"docker://{host}/team-a/pod-bob:v1",
                  check=False))
    refused(alice("push", "--tls-verify=false", local, f"docker://{host}/team-a/pod-anon:v1", check=False))

    bob = make_podman("bob")
    refused(bob("pull", "--tls-verify=false", f"{host}/team-a/pod:v1", check=False))
    assert bob("login", "--tls-verify=false", "-u", "bob", "-p", "wrong", host, check=False).returncode != 0
    bob("login", "--tls-verify=false", "-u", "bob", "-p", PASSWORDS["bob"], host)
    bob("pull", "--tls-verify=false", f"{host}/team-a/pod:v1")
    assert bob("image", "exists", f"{host}/team-a/pod:v1", check=False).returncode == 0
    refused(bob("push", "--tls-verify=false", f"{host}/team-a/pod:v1", f"docker://{host}/team-a/pod:bob", check=False))
    bob("logout", host)

    anon = make_podman("anon")
    anon("pull", "--tls-verify=false", f"{host}/public/base:v1")
    refused(anon("push", "--tls-verify=false", f"{host}/public/base:v1", f"docker://{host}/public/anon:v1",
                 check=False))


# -- Distribution trusts Cargobay's tokens --------------------------------------------------------
def _distribution_trusting(authbay: RunningServer, workdir: Path, cert: Path, issuer: str) -> RunningServer:
    return start_distribution(workdir, extra_config={"auth": {"token": {
        "realm": f"{authbay.url}/auth/token", "service": DIST_SERVICE, "issuer": issuer,
        "rootcertbundle": str(cert)}}})


def test_distribution_accepts_tokens_issued_by_cargobay(authbay: RunningServer, skopeo: Skopeo, tmp_path: Path) -> None:
    cert = authbay.log_path.parent / "keys" / "token-cert.pem"
    dist = _distribution_trusting(authbay, tmp_path / "dist", cert, ISSUER)
    try:
        image = simple_image("auth-e2e-dist", layer_count=2)
        layout = write_oci_layout(tmp_path / "in", image, "v1")
        target = f"docker://{dist.hostport}/team-a/app:v1"
        skopeo.copy(f"oci:{layout}:v1", target, "--dest-creds", creds("alice"), "--preserve-digests")
        assert skopeo.inspect_raw(target, "--creds", creds("bob")) == image.manifest
        refused(skopeo.copy(f"oci:{layout}:v1", f"docker://{dist.hostport}/team-a/bob:v1", "--dest-creds",
                            creds("bob"), check=False))
        refused(skopeo("inspect", "--tls-verify=false", "--raw", target, check=False))  # anonymous: not team-a

        # the audience matters: a token Cargobay issued for itself does not open Distribution
        own = get_token(authbay.url, "alice", "repository:team-a/app:pull")
        assert httpx.get(f"{dist.url}/v2/team-a/app/tags/list", headers=bearer(own)).status_code == 401
        theirs = get_token(authbay.url, "alice", "repository:team-a/app:pull", service=DIST_SERVICE)
        assert httpx.get(f"{dist.url}/v2/team-a/app/tags/list", headers=bearer(theirs)).json()["tags"] == ["v1"]
        # ... and Cargobay does not take Distribution's
        assert httpx.get(f"{authbay.url}/v2/team-a/app/tags/list", headers=bearer(theirs)).status_code == 401
    finally:
        dist.stop()


def test_distribution_accepts_rs256_tokens_from_a_keygen_key(tmp_path: Path) -> None:
    require_tool("docker-registry")
    key, cert = tmp_path / "rsa-key.pem", tmp_path / "rsa-cert.pem"
    subprocess.run([sys.executable, "-m", "registry", "auth", "keygen", "--algorithm", "RS256", "--key", str(key),
                    "--certificate", str(cert)], check=True, capture_output=True, cwd=REPO_ROOT, timeout=60)
    config = auth_config(tmp_path / "cb", PASSWORDS, RULES, token={"key": str(key), "certificate": str(cert),
                                                                   "extra_services": DIST_SERVICE})
    cargobay = start_cargobay(tmp_path / "cb", config=config)
    try:
        dist = _distribution_trusting(cargobay, tmp_path / "dist", cert, ISSUER)
        try:
            token = get_token(cargobay.url, "alice", "repository:team-a/rsa:pull,push", service=DIST_SERVICE)
            header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
            assert header["alg"] == "RS256"
            image = simple_image("auth-e2e-rsa", layer_count=1)
            with httpx.Client(headers=bearer(token), timeout=60) as c:
                for blob in image.blobs():
                    started = c.post(f"{dist.url}/v2/team-a/rsa/blobs/uploads/")
                    assert started.status_code == 202, started.text
                    location = str(httpx.URL(dist.url).join(started.headers["location"]))
                    separator = "&" if "?" in location else "?"
                    done = c.put(f"{location}{separator}digest={quote(blob.digest)}", content=blob.data)
                    assert done.status_code == 201, done.text
                put = c.put(f"{dist.url}/v2/team-a/rsa/manifests/v1", content=image.manifest,
                            headers={"Content-Type": image.media_type})
                assert put.status_code == 201, put.text
                assert c.get(f"{dist.url}/v2/team-a/rsa/tags/list").json()["tags"] == ["v1"]
            r = httpx.get(f"{dist.url}/v2/team-a/rsa/tags/list")
            assert r.status_code == 401 and f'realm="{cargobay.url}/auth/token"' in r.headers["www-authenticate"]
        finally:
            dist.stop()
    finally:
        cargobay.stop()
