"""Authentication and access control against a real `registry serve` with auth on: the challenge,
401 against 403, nothing revealed about repositories the caller cannot see, the catalog, mounts,
the token endpoint (GET with Basic, OAuth2 password and refresh grants), Basic on /v2/, failed-login
rate limits, robot accounts made with the CLI while the server runs, and no secret in the logs."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.support.images import push_image, simple_image
from tests.support.servers import REPO_ROOT, RunningServer, free_port, start_cargobay, wait_until_ready

from .helpers import assert_error, sha256

SERVICE, ISSUER = "cargobay-test", "cargobay-test-issuer"
PASSWORDS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2", "carol": "carol-Secret-3", "admin": "admin-Secret-4"}
RULES = """\
anonymous_pull: ["public/*"]
groups:
  admins: [admin]
rules:
  - users: [alice]
    repositories: ["team-a/*"]
    actions: [pull, push]
  - users: [bob]
    repositories: ["team-a/*"]
    actions: [pull]
  - users: [carol]
    repositories: ["team-c/*", "public/*"]
    actions: [pull, push]
  - groups: [admins]
    repositories: ["*"]
    actions: ["*"]
    catalog: true
"""


def auth_config(workdir: Path, passwords: dict[str, str], rules: str, **auth: object) -> dict:
    """A config dict for start_cargobay with auth on: htpasswd (bcrypt cost 4, fast), rules file and
    a key directory under `workdir`, plus any `auth` keys given."""
    workdir.mkdir(parents=True, exist_ok=True)
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text("".join(f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}\n"
                                for user, pw in passwords.items()))
    (workdir / "rules.yaml").write_text(rules)
    token = {"issuer": ISSUER, "key_dir": str(workdir / "keys"), **auth.pop("token", {})}  # type: ignore[dict-item]
    return {
        "storage": {"filesystem": {"root": str(workdir / "data")}, "delete": {"enabled": True}},
        "log": {"level": "debug", "access": True},
        "auth": {"enabled": True, "service": SERVICE, "htpasswd": str(htpasswd), "rules": str(workdir / "rules.yaml"),
                 "token": token, **auth},
    }


def get_token(base_url: str, user: str | None, *scopes: str, service: str = SERVICE) -> str:
    auth = (user, PASSWORDS[user]) if user else None
    r = httpx.get(f"{base_url}/auth/token", params=[("service", service)] + [("scope", s) for s in scopes],
                  auth=auth, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def claims(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("auth")
    srv = start_cargobay(workdir, config=auth_config(workdir, PASSWORDS, RULES, token={"expiry": 7}))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def seeded(server: RunningServer) -> dict[str, str]:
    """team-a/exists and public/base hold an image (pushed by alice and admin)."""
    image = simple_image("auth-seed", layer_count=1)
    for user, repo in (("alice", "team-a/exists"), ("admin", "public/base")):
        with httpx.Client(headers=bearer(get_token(server.url, user, f"repository:{repo}:pull,push")), timeout=30) as c:
            push_image(c, server.url, repo, image, "v1")
    return {"digest": image.digest, "layer": image.layers[0].digest}


def challenge_params(header: str) -> dict[str, str]:
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


# -- the challenge -------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path,scope", [
    ("GET", "/v2/", None),
    ("GET", "/v2/team-a/app/manifests/latest", "repository:team-a/app:pull"),
    ("HEAD", "/v2/team-a/app/blobs/sha256:" + "0" * 64, "repository:team-a/app:pull"),
    ("POST", "/v2/team-a/app/blobs/uploads/", "repository:team-a/app:pull,push"),
    ("PUT", "/v2/team-a/app/manifests/v1", "repository:team-a/app:pull,push"),
    ("DELETE", "/v2/team-a/app/manifests/v1", "repository:team-a/app:delete"),
    ("GET", "/v2/team-a/app/tags/list", "repository:team-a/app:pull"),
    ("GET", "/v2/_catalog", "registry:catalog:*"),
])
def test_no_credentials_get_401_with_the_bearer_challenge(server: RunningServer, method: str, path: str,
                                                          scope: str | None) -> None:
    r = httpx.request(method, server.url + path, timeout=30)
    assert_error(r, 401, "UNAUTHORIZED")
    params = challenge_params(r.headers["www-authenticate"])
    assert params.pop("realm") == f"{server.url}/auth/token"
    assert params.pop("service") == SERVICE
    assert params == ({"scope": scope} if scope else {})


def test_public_pull_is_anonymous_and_nothing_else_is(server: RunningServer, seeded: dict[str, str]) -> None:
    r = httpx.get(f"{server.url}/v2/public/base/manifests/v1",
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200 and r.headers["docker-content-digest"] == seeded["digest"]
    assert_error(httpx.post(f"{server.url}/v2/public/base/blobs/uploads/"), 401, "UNAUTHORIZED")
    token = get_token(server.url, None, "repository:public/base:pull,push", "repository:team-a/exists:pull")
    assert claims(token)["access"] == [{"type": "repository", "name": "public/base", "actions": ["pull"]}]
    assert claims(token)["sub"] == ""
    assert httpx.get(f"{server.url}/v2/public/base/tags/list", headers=bearer(token)).json()["tags"] == ["v1"]
    assert_error(httpx.post(f"{server.url}/v2/public/base/blobs/uploads/", headers=bearer(token)), 401, "UNAUTHORIZED")


# -- tokens --------------------------------------------------------------------------------------
def test_token_holds_only_what_the_rules_grant_of_what_was_asked(server: RunningServer) -> None:
    token = get_token(server.url, "bob", "repository:team-a/app:pull,push,delete", "repository:team-b/x:pull",
                      "registry:catalog:*")
    body = claims(token)
    assert body["access"] == [{"type": "repository", "name": "team-a/app", "actions": ["pull"]}]
    assert (body["iss"], body["aud"], body["sub"]) == (ISSUER, SERVICE, "bob")
    assert body["exp"] - body["iat"] == 7 * 60 and body["nbf"] <= time.time() + 1 and body["jti"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and len(header["kid"].split(":")) == 12


def test_token_endpoint_refuses_bad_credentials_and_foreign_services(server: RunningServer) -> None:
    r = httpx.get(f"{server.url}/auth/token", params={"service": SERVICE}, auth=("alice", "wrong"))
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"].startswith("Basic ")
    r2 = httpx.get(f"{server.url}/auth/token", params={"service": SERVICE}, auth=("nobody-at-all", "wrong"))
    assert (r2.status_code, r2.content) == (r.status_code, r.content)  # no difference for unknown users
    assert httpx.get(f"{server.url}/auth/token", params={"service": "elsewhere"}).status_code == 403


def test_token_endpoint_errors_are_never_cached_and_keep_their_wire_formats(server: RunningServer) -> None:
    url = f"{server.url}/auth/token"
    refusals = [httpx.get(url, params={"service": SERVICE}, auth=("alice", "wrong")),
                httpx.get(url, params={"service": "elsewhere"}),
                httpx.get(url, params=[("service", SERVICE)] + [("scope", f"repository:r{i}:pull") for i in range(99)])]
    for r, (status, code) in zip(refusals, [(401, "UNAUTHORIZED"), (403, "DENIED"), (403, "DENIED")], strict=True):
        assert_error(r, status, code)  # GET: the OCI error JSON, like every other route
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    r = httpx.post(url, data={"grant_type": "password", "username": "alice", "password": "wrong", "service": SERVICE})
    assert r.status_code == 400 and r.headers["cache-control"] == "no-store"
    assert r.json() == {"error": "invalid_grant", "error_description": "invalid credentials"}  # POST: OAuth2's


def test_oauth2_password_and_refresh_token_grants(server: RunningServer, tmp_path: Path) -> None:
    url = f"{server.url}/auth/token"
    form = {"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"], "service": SERVICE,
            "client_id": "containerd", "scope": "repository:team-a/app:pull repository:team-a/app:push",
            "access_type": "offline"}
    r = httpx.post(url, data=form)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store", r.text
    body = r.json()
    assert claims(body["access_token"])["access"] == [
        {"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}]
    assert body["expires_in"] == 7 * 60 and body["refresh_token"]
    refresh = body["refresh_token"]
    # a refresh token is no access token
    assert_error(httpx.get(f"{server.url}/v2/team-a/app/tags/list", headers=bearer(refresh)), 401, "UNAUTHORIZED")
    r = httpx.post(url, data={"grant_type": "refresh_token", "refresh_token": refresh, "service": SERVICE,
                              "scope": "repository:team-a/other:pull", "client_id": "containerd"})
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["access"] == [
        {"type": "repository", "name": "team-a/other", "actions": ["pull"]}]
    assert "refresh_token" not in r.json()
    # wrong password, tampered refresh token, unknown grant
    assert httpx.post(url, data={**form, "password": "nope"}).json()["error"] == "invalid_grant"
    tampered = {"grant_type": "refresh_token", "refresh_token": refresh[:-4] + "AAAA"}
    assert httpx.post(url, data=tampered).status_code == 400
    assert httpx.post(url, data={"grant_type": "client_credentials"}).json()["error"] == "unsupported_grant_type"
    # GET with offline_token=true also hands out a refresh token (docker login)
    r = httpx.get(url, params={"service": SERVICE, "offline_token": "true", "client_id": "docker"},
                  auth=("carol", PASSWORDS["carol"]))
    assert r.status_code == 200 and r.json()["refresh_token"]


def test_refresh_token_dies_with_a_password_change(tmp_path: Path) -> None:
    srv = start_cargobay(tmp_path, config=auth_config(tmp_path, {"dave": "dave-1"}, "rules: []\n"))
    try:
        url = f"{srv.url}/auth/token"
        r = httpx.post(url, data={"grant_type": "password", "username": "dave", "password": "dave-1",
                                  "access_type": "offline", "service": SERVICE})
        refresh = r.json()["refresh_token"]
        assert httpx.post(url, data={"grant_type": "refresh_token", "refresh_token": refresh}).status_code == 200
        subprocess.run([sys.executable, "-m", "registry", "user", "add", "dave", "--update", "--password-stdin",
                        "--cost", "4", "--htpasswd", str(tmp_path / "htpasswd")], input="dave-2\n", text=True,
                       check=True, cwd=REPO_ROOT, capture_output=True)
        time.sleep(1.1)  # the server re-reads the file at most once a second
        r = httpx.post(url, data={"grant_type": "refresh_token", "refresh_token": refresh})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    finally:
        srv.stop()


# -- 401 against 403, and existence never shows --------------------------------------------------
def test_valid_credentials_without_the_right_get_403(server: RunningServer, seeded: dict[str, str]) -> None:
    bob = get_token(server.url, "bob", "repository:team-a/exists:pull,push")
    assert httpx.get(f"{server.url}/v2/team-a/exists/tags/list", headers=bearer(bob)).status_code == 200
    assert_error(httpx.post(f"{server.url}/v2/team-a/exists/blobs/uploads/", headers=bearer(bob)), 403, "DENIED")
    assert_error(httpx.delete(f"{server.url}/v2/team-a/exists/manifests/v1", headers=bearer(bob)), 403, "DENIED")
    # a user the rules would allow, holding a token for something else: 401 insufficient_scope (fetch a new token)
    alice_b = get_token(server.url, "alice", "repository:team-a/other:pull")
    r = httpx.post(f"{server.url}/v2/team-a/exists/blobs/uploads/", headers=bearer(alice_b))
    assert_error(r, 401, "UNAUTHORIZED")
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert 'scope="repository:team-a/exists:pull,push"' in r.headers["www-authenticate"]


def test_invalid_or_expired_tokens_get_401_invalid_token(server: RunningServer) -> None:
    token = get_token(server.url, "alice", "repository:team-a/exists:pull")
    h, _, s = token.split(".")
    body = claims(token)
    more = [{"type": "repository", "name": "team-a/exists", "actions": ["pull", "push", "delete"]}]
    forged = base64.urlsafe_b64encode(json.dumps({**body, "access": more}).encode()).decode().rstrip("=")
    for bad in (f"{h}.{forged}.{s}", "not-a-token", token + "x"):
        r = httpx.get(f"{server.url}/v2/team-a/exists/tags/list", headers=bearer(bad))
        assert_error(r, 401, "UNAUTHORIZED")
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.mark.parametrize("who", [None, "bob", "carol"])
def test_answers_do_not_reveal_whether_a_repository_exists(server: RunningServer, seeded: dict[str, str],
                                                           who: str | None) -> None:
    """Anonymous, and users without the right, get the same answer for team-a/exists as for a
    repository that never existed (the name in the answer aside)."""
    def probe(repo: str) -> list[tuple[int, bytes, str]]:
        headers = bearer(get_token(server.url, who, f"repository:{repo}:pull,push,delete")) if who else {}
        out = []
        for method, path in (("GET", f"/v2/{repo}/manifests/v1"), ("GET", f"/v2/{repo}/tags/list"),
                             ("HEAD", f"/v2/{repo}/blobs/{seeded['layer']}"), ("POST", f"/v2/{repo}/blobs/uploads/"),
                             ("DELETE", f"/v2/{repo}/manifests/v1")):
            r = httpx.request(method, server.url + path, headers=headers)
            if who == "bob" and method in ("GET", "HEAD"):
                continue  # bob may pull team-a/*: those answers are real
            out.append((r.status_code, r.content.replace(repo.encode(), b"REPO"),
                        r.headers.get("www-authenticate", "").replace(repo, "REPO")))
        return out

    existing, missing = probe("team-a/exists"), probe("team-a/never-was")
    assert existing == missing
    assert all(status in (401, 403) for status, _, _ in existing)


# -- catalog and mounts --------------------------------------------------------------------------
def test_catalog_needs_registry_catalog(server: RunningServer, seeded: dict[str, str]) -> None:
    alice = get_token(server.url, "alice", "registry:catalog:*")
    assert claims(alice)["access"] == []
    assert_error(httpx.get(f"{server.url}/v2/_catalog", headers=bearer(alice)), 403, "DENIED")
    admin = get_token(server.url, "admin", "registry:catalog:*")
    r = httpx.get(f"{server.url}/v2/_catalog", headers=bearer(admin))
    assert r.status_code == 200 and "team-a/exists" in r.json()["repositories"]


def test_mount_only_from_a_repository_the_caller_may_pull(server: RunningServer, seeded: dict[str, str]) -> None:
    layer = seeded["layer"]
    carol = get_token(server.url, "carol", "repository:team-c/dst:pull,push", "repository:team-a/exists:pull")
    assert [a["name"] for a in claims(carol)["access"]] == ["team-c/dst"]
    answers = []
    for source in ("team-a/exists", "team-a/never-was"):
        r = httpx.post(f"{server.url}/v2/team-c/dst/blobs/uploads/", params={"mount": layer, "from": source},
                       headers=bearer(carol))
        assert r.status_code == 202, r.text  # an ordinary upload starts instead: nothing mounted, nothing told
        answers.append(r.status_code)
        httpx.delete(server.url + r.headers["location"], headers=bearer(carol))
    r = httpx.head(f"{server.url}/v2/team-c/dst/blobs/{layer}", headers=bearer(carol))
    assert r.status_code == 404
    # alice may pull the source: the blob is mounted
    alice = get_token(server.url, "alice", "repository:team-a/dst:pull,push", "repository:team-a/exists:pull")
    r = httpx.post(f"{server.url}/v2/team-a/dst/blobs/uploads/", params={"mount": layer, "from": "team-a/exists"},
                   headers=bearer(alice))
    assert r.status_code == 201 and r.headers["docker-content-digest"] == layer


# -- robot accounts made while the server runs ---------------------------------------------------
def test_robot_account_from_the_cli_is_limited_to_its_repository(server: RunningServer, seeded: dict[str, str]) -> None:
    workdir = Path(server.log_path).parent
    out = subprocess.run([sys.executable, "-m", "registry", "robot", "create", "ci-robot", "--repo", "team-r/only",
                          "--actions", "pull,push", "--cost", "4", "--htpasswd", str(workdir / "htpasswd"),
                          "--rules", str(workdir / "rules.yaml")],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip()
    assert len(secret) >= 40 and "\n" not in secret and secret not in out.stderr
    again = subprocess.run([sys.executable, "-m", "registry", "robot", "create", "ci-robot", "--repo", "x",
                            "--htpasswd", str(workdir / "htpasswd"), "--rules", str(workdir / "rules.yaml")],
                           capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert again.returncode == 2 and again.stderr.strip() == "registry: user ci-robot already exists"
    time.sleep(1.1)
    r = httpx.get(f"{server.url}/auth/token", auth=("ci-robot", secret), params=[
        ("service", SERVICE), ("scope", "repository:team-r/only:pull,push"),
        ("scope", "repository:team-a/exists:pull")])
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert claims(token)["access"] == [{"type": "repository", "name": "team-r/only", "actions": ["pull", "push"]}]
    with httpx.Client(headers=bearer(token)) as c:
        push_image(c, server.url, "team-r/only", simple_image("robot", layer_count=1), "v1")
    other = get_token_with(server.url, ("ci-robot", secret), "repository:team-a/exists:pull")
    assert_error(httpx.get(f"{server.url}/v2/team-a/exists/manifests/v1", headers=bearer(other)), 403, "DENIED")


def get_token_with(base_url: str, auth: tuple[str, str], *scopes: str) -> str:
    r = httpx.get(f"{base_url}/auth/token", auth=auth, params=[("service", SERVICE)] + [("scope", s) for s in scopes])
    assert r.status_code == 200, r.text
    return r.json()["token"]


# -- Basic on /v2/, rate limits, logs ------------------------------------------------------------
def test_basic_on_v2_only_when_configured_and_failed_logins_rate_limited(tmp_path: Path, server: RunningServer) -> None:
    # the module server has auth.basic off: Basic credentials there count for nothing
    r = httpx.get(f"{server.url}/v2/team-a/exists/tags/list", auth=("alice", PASSWORDS["alice"]))
    assert_error(r, 401, "UNAUTHORIZED")

    limits = {"address_failures": 3, "user_failures": 5, "window": "1m"}
    srv = start_cargobay(tmp_path, config=auth_config(tmp_path, PASSWORDS, RULES, basic=True, ratelimit=limits))
    try:
        url = f"{srv.url}/v2/team-a/x/tags/list"
        assert httpx.get(f"{srv.url}/v2/", auth=("alice", PASSWORDS["alice"])).status_code == 200
        assert httpx.get(url, auth=("alice", PASSWORDS["alice"])).status_code == 404  # allowed: and it is not there
        assert_error(httpx.post(f"{srv.url}/v2/team-a/x/blobs/uploads/", auth=("bob", PASSWORDS["bob"])), 403, "DENIED")
        assert_error(httpx.get(url, auth=("alice", "wrong")), 401, "UNAUTHORIZED")

        # per address: 3 failures from 10.1.1.1 (uvicorn takes X-Forwarded-For from loopback), then 429
        def attempt(address: str, user: str, password: str, path: str = url) -> httpx.Response:
            return httpx.get(path, auth=(user, password), headers={"X-Forwarded-For": address})

        for i in range(3):
            assert attempt("10.1.1.1", f"guess{i}", "x").status_code == 401
        blocked = attempt("10.1.1.1", "alice", PASSWORDS["alice"])  # even the right password
        assert_error(blocked, 429, "TOOMANYREQUESTS")
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        token_blocked = httpx.get(f"{srv.url}/auth/token", auth=("alice", PASSWORDS["alice"]),
                                  headers={"X-Forwarded-For": "10.1.1.1"})
        assert token_blocked.status_code == 429
        assert attempt("10.1.1.2", "alice", PASSWORDS["alice"]).status_code == 404  # other addresses are fine

        # per user: 5 failures for carol from different addresses, then carol is blocked everywhere
        for i in range(5):
            assert attempt(f"10.2.0.{i}", "carol", "x").status_code == 401
        assert attempt("10.2.0.99", "carol", PASSWORDS["carol"]).status_code == 429
        assert httpx.post(f"{srv.url}/auth/token", headers={"X-Forwarded-For": "10.2.0.98"}, data={
            "grant_type": "password", "username": "carol", "password": PASSWORDS["carol"]}).status_code == 429
        assert attempt("10.2.0.99", "alice", PASSWORDS["alice"]).status_code == 404

        log = srv.log()
        assert "failed login" in log and "guess0" in log
    finally:
        srv.stop()
    for text in (log, server.log()):
        for password in PASSWORDS.values():
            assert password not in text
        assert "eyJ" not in text  # no JWT (header or claims) anywhere in the logs


def test_bad_auth_files_stop_the_server_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - users: [a]\n    repositories: [x]\n    actions: [read]\n")
    auth = {"enabled": True, "rules": str(rules), "token": {"key_dir": str(tmp_path / "k")}}
    config.write_text(json.dumps({"auth": auth,
                                  "storage": {"filesystem": {"root": str(tmp_path / "d")}}}))
    result = subprocess.run([sys.executable, "-m", "registry", "serve", "--config", str(config)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("registry: auth: ") and "'read' is not one of" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_token_signing_key_is_generated_once_and_kept(server: RunningServer, tmp_path: Path) -> None:
    keydir = Path(server.log_path).parent / "keys"
    assert (keydir / "token-key.pem").stat().st_mode & 0o077 == 0
    jwks = httpx.get(f"{server.url}/auth/jwks").json()["keys"]
    kid = json.loads(base64.urlsafe_b64decode(get_token(server.url, "alice").split(".")[0] + "=="))["kid"]
    assert [k["kid"] for k in jwks] == [kid] and jwks[0]["kty"] == "EC" and "d" not in jwks[0]
    assert sha256((keydir / "token-key.pem").read_bytes())  # still there for the next start


def test_tokens_of_a_trusted_external_issuer(tmp_path: Path) -> None:
    """auth.trust: tokens signed by another issuer's key (from a JWKS file) are accepted for what their
    access claim holds; the challenge names the external realm; other issuers and keys are refused."""
    from registry.access import Access
    from registry.auth import keys, tokens

    key = keys.generate_private_key("RS256")
    signing = keys.SigningKey(key, "RS256", "idp-key-1")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [keys.to_jwk(key.public_key(), "idp-key-1")]}))
    realm = "https://idp.example.test/token"
    srv = start_cargobay(tmp_path, config=auth_config(tmp_path, {}, "rules: []\n", realm=realm, trust={
        "issuer": "external-idp", "jwks": str(tmp_path / "jwks.json")}))
    try:
        def external(issuer: str = "external-idp", audience: str = SERVICE, signer: keys.SigningKey = signing) -> str:
            return tokens.issue(signer, issuer=issuer, audience=audience, subject="ci", lifetime=60,
                                access=[Access("repository", "ext/app", ("pull", "push"))])[0]

        r = httpx.post(f"{srv.url}/v2/ext/app/blobs/uploads/", headers=bearer(external()))
        assert r.status_code == 202, r.text
        httpx.delete(srv.url + r.headers["location"], headers=bearer(external()))
        r = httpx.get(f"{srv.url}/v2/ext/other/tags/list", headers=bearer(external()))
        assert_error(r, 401, "UNAUTHORIZED")  # this registry cannot know what the issuer would grant: ask again
        assert challenge_params(r.headers["www-authenticate"])["realm"] == realm
        assert challenge_params(r.headers["www-authenticate"])["error"] == "insufficient_scope"
        stranger = keys.SigningKey(keys.generate_private_key("RS256"), "RS256", "idp-key-1")
        for bad in (external(issuer="cargobay-test-issuer"), external(audience="elsewhere"), external(signer=stranger)):
            r = httpx.get(f"{srv.url}/v2/ext/app/tags/list", headers=bearer(bad))
            assert_error(r, 401, "UNAUTHORIZED")
            assert challenge_params(r.headers["www-authenticate"])["error"] == "invalid_token"
    finally:
        srv.stop()


def test_forwarded_for_from_an_untrusted_peer_cannot_dodge_the_address_limit(tmp_path: Path) -> None:
    config = auth_config(tmp_path, PASSWORDS, RULES, basic=True, ratelimit={"address_failures": 2, "user_failures": 50})
    config["http"] = {"trusted_proxies": ""}  # loopback is a client here, not a proxy
    srv = start_cargobay(tmp_path, config=config)
    try:
        url = f"{srv.url}/v2/team-a/x/tags/list"
        for i in range(2):  # each "from" a different forged address, all really from 127.0.0.1
            r = httpx.get(url, auth=(f"guess{i}", "x"), headers={"X-Forwarded-For": f"10.9.0.{i}"})
            assert r.status_code == 401
        r = httpx.get(url, auth=("alice", PASSWORDS["alice"]), headers={"X-Forwarded-For": "10.9.0.77"})
        assert_error(r, 429, "TOOMANYREQUESTS")
    finally:
        srv.stop()


def test_generated_key_lives_beside_the_data_not_in_the_cwd_and_survives_a_restart(tmp_path: Path) -> None:
    """Started from an unrelated working directory with no key configured, the server keeps its
    generated key under the storage root (docs/auth.md); a restart finds it, so tokens issued before
    still work."""
    config = auth_config(tmp_path / "etc", PASSWORDS, RULES)
    del config["auth"]["token"]["key_dir"]  # the default
    config_path = tmp_path / "etc" / "config.yaml"
    config_path.write_text(json.dumps(config))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    root = tmp_path / "etc" / "data"

    def start() -> RunningServer:
        port = free_port()
        log_path = tmp_path / f"cargobay-{port}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "registry", "serve", "--config", str(config_path),
                                        "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        server = RunningServer(f"http://127.0.0.1:{port}", "127.0.0.1", port, process, log_path, root, env)
        wait_until_ready(server)
        return server

    first = start()
    try:
        token = get_token(first.url, "alice", "repository:team-a/app:pull")
        assert httpx.get(f"{first.url}/v2/team-a/app/tags/list", headers=bearer(token)).status_code == 404
    finally:
        first.stop()
    key = root / "auth" / "token-key.pem"
    assert key.stat().st_mode & 0o077 == 0 and (root / "auth" / "token-cert.pem").exists()
    assert list(cwd.iterdir()) == []  # nothing landed in the working directory
    second = start()
    try:
        r = httpx.get(f"{second.url}/v2/team-a/app/tags/list", headers=bearer(token))  # issued by the first
        assert_error(r, 404, "NAME_UNKNOWN")
    finally:
        second.stop()
    assert list(cwd.iterdir()) == []
