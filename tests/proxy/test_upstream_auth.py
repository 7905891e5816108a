"""Upstream credentials: a Distribution with htpasswd (Basic) and a Cargobay with token auth (the
real Docker token flow) are cached with credentials from a password_file or the
CARGOBAY_PROXY_<HOST>_PASSWORD variable, and fail clearly without them. Recording proxies in front
of both upstreams show that the clients' own Authorization never reaches an upstream, and that the
upstream's password goes only to its Basic endpoint or token realm."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import bcrypt
import httpx
import pytest

from tests.registry.test_auth_api import PASSWORDS, SERVICE, auth_config, bearer, get_token
from tests.support import images as im
from tests.support.images import push_image
from tests.support.s3replicas import RecordingProxy
from tests.support.servers import RunningServer, serving, start_cargobay, start_distribution

from .conftest import assert_same_image, cache_config, get_manifest, pull, upstream_entry

MIRROR_USER, MIRROR_PASSWORD = "mirror", "mirror-Upstream-Secret-7"
UPSTREAM_PASSWORDS = {MIRROR_USER: MIRROR_PASSWORD, "admin": PASSWORDS["admin"]}
UPSTREAM_RULES = """\
rules:
  - users: [mirror]
    repositories: ["org/*"]
    actions: [pull]
  - users: [admin]
    repositories: ["*"]
    actions: ["*"]
"""
CACHE_RULES = """\
rules:
  - users: [alice]
    repositories: ["*"]
    actions: [pull]
"""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Upstreams:
    basic: RunningServer  # Distribution with htpasswd
    token: RunningServer  # Cargobay with token auth
    basic_seen: RecordingProxy
    token_seen: RecordingProxy
    image: im.Image  # org/app:1 on both


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    image = im.simple_image("upstream-auth")
    workdir = tmp_path_factory.mktemp("basic-upstream")
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(f"{MIRROR_USER}:{bcrypt.hashpw(MIRROR_PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    basic_up = start_distribution(workdir, {"auth": {"htpasswd": {"realm": "basic-upstream", "path": str(htpasswd)}}})
    token_dir = tmp_path_factory.mktemp("token-upstream")
    token_up = start_cargobay(token_dir, config=auth_config(token_dir, UPSTREAM_PASSWORDS, UPSTREAM_RULES))
    basic_seen, token_seen = RecordingProxy(basic_up.url), RecordingProxy(token_up.url)
    try:
        with httpx.Client(auth=(MIRROR_USER, MIRROR_PASSWORD), timeout=30) as http:
            push_image(http, basic_up.url, "org/app", image, "1")
        token = httpx.get(f"{token_up.url}/auth/token", params={"service": SERVICE, "scope": "repository:org/app:*"},
                          auth=("admin", PASSWORDS["admin"]), timeout=30).json()["token"]
        with httpx.Client(headers=bearer(token), timeout=30) as http:
            push_image(http, token_up.url, "org/app", image, "1")
        yield Upstreams(basic_up, token_up, basic_seen, token_seen, image)
    finally:
        basic_seen.close()
        token_seen.close()
        basic_up.stop()
        token_up.stop()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> Iterator[RunningServer]:
    """A cache with auth on (alice may pull everything) caching both upstreams under several host
    names: with the password in a file, in the variable, with a wrong one and with none."""
    workdir = tmp_path_factory.mktemp("auth-cache")
    password_file = workdir / "upstream-password"
    password_file.write_text(MIRROR_PASSWORD + "\n")
    wrong_file = workdir / "wrong-password"
    wrong_file.write_text("not-the-password\n")
    basic_url, token_url = upstreams.basic_seen.url(), upstreams.token_seen.url()
    hosts = [
        upstream_entry("basic.example", basic_url, username=MIRROR_USER, password_file=str(password_file)),
        upstream_entry("basic-env.example", basic_url, username=MIRROR_USER),
        upstream_entry("basic-wrong.example", basic_url, username=MIRROR_USER, password_file=str(wrong_file)),
        upstream_entry("basic-none.example", basic_url),
        upstream_entry("ghcr.io", token_url, username=MIRROR_USER, password_file=str(password_file)),
        upstream_entry("token-env.example", token_url, username=MIRROR_USER),
        upstream_entry("token-none.example", token_url),
    ]
    base = auth_config(workdir, PASSWORDS, CACHE_RULES, basic=True)
    env = {"CARGOBAY_PROXY_BASIC_ENV_EXAMPLE_PASSWORD": MIRROR_PASSWORD,
           "CARGOBAY_PROXY_TOKEN_ENV_EXAMPLE_PASSWORD": MIRROR_PASSWORD}
    yield from serving(start_cargobay(workdir, config=cache_config(workdir, hosts, base, retries=0), env=env))


def alice_headers(cache: RunningServer, repo: str) -> dict[str, str]:
    """A Bearer token of the cache's own, as a client's `docker login` would bring."""
    return bearer(get_token(cache.url, "alice", f"repository:{repo}:pull"))


@pytest.mark.parametrize("host", ["basic.example", "basic-env.example", "ghcr.io", "token-env.example"])
def test_configured_credentials_pull_from_the_upstream_and_only_the_caches_identity_goes_there(
        cache: RunningServer, upstreams: Upstreams, host: str) -> None:
    seen = upstreams.token_seen if host in ("ghcr.io", "token-env.example") else upstreams.basic_seen
    seen.clear()
    repo = f"{host}/org/app"
    headers = alice_headers(cache, repo)
    assert_same_image(pull(cache.url, repo, "1", headers=headers), upstreams.image)
    with httpx.Client(auth=("alice", PASSWORDS["alice"]), timeout=30) as alice:  # Basic to the cache, too
        r = alice.get(f"{cache.url}/v2/org/app/manifests/1", params={"ns": host},
                      headers={"Accept": upstreams.image.media_type})
        assert r.status_code == 200 and r.content == upstreams.image.manifest, r.text[:300]

    assert seen.seen, "nothing reached the upstream"
    client_secrets = [headers["Authorization"], headers["Authorization"].split()[1],
                      basic("alice", PASSWORDS["alice"]), PASSWORDS["alice"]]
    for request in seen.seen:
        sent = " ".join(request.headers.values())
        assert not any(secret in sent for secret in client_secrets), f"client credentials upstream: {request.path}"
        auth = request.headers.get("authorization", "")
        if auth.startswith("Basic "):  # the upstream password: to the Basic upstream or the token realm only
            assert auth == basic(MIRROR_USER, MIRROR_PASSWORD)
            assert seen is upstreams.basic_seen or request.path == "/auth/token", request.path
    if seen is upstreams.token_seen:
        assert any(r.path == "/auth/token" for r in seen.seen)
        assert any(r.path.startswith("/v2/org/app/") and r.headers.get("authorization", "").startswith("Bearer ")
                   and r.status == 200 for r in seen.seen)
    log = cache.log()
    assert MIRROR_PASSWORD not in log and PASSWORDS["alice"] not in log and "eyJ" not in log


@pytest.mark.parametrize("host", ["basic-none.example", "basic-wrong.example", "token-none.example"])
def test_without_working_credentials_the_pull_fails_clearly(cache: RunningServer, upstreams: Upstreams,
                                                            host: str) -> None:
    repo = f"{host}/org/app"
    r = get_manifest(cache.url, repo, "1", headers=alice_headers(cache, repo))
    assert r.status_code >= 400 and r.status_code != 500, (r.status_code, r.text[:300])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    messages = " ".join(e.get("message", "") for e in r.json()["errors"])
    assert host in messages or "upstream" in messages.lower(), messages
    assert "Traceback" not in cache.log()
    assert "not-the-password" not in cache.log()

