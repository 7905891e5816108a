"""Access rules on cached names: with auth on in the cache, the rules see a cached repository by
its canonical name with the host prefix (`docker.io/library/x`), whichever of the three ways the
request named it. A user may pull through docker.io but not ghcr.io; anonymous pull is granted for
one upstream; local repositories keep their own rules."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.registry.test_auth_api import PASSWORDS, auth_config, bearer, get_token
from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import RunningServer, serving, start_cargobay

from .conftest import assert_same_image, cache_config, error_of, get_manifest, manifest_digest, pull, upstream_entry

RULES = """\
anonymous_pull: ["quay.io/*"]
rules:
  - users: [alice]
    repositories: ["docker.io/*", "team-a/*"]
    actions: [pull, push]
  - users: [bob]
    repositories: ["ghcr.io/*"]
    actions: [pull]
"""
ALICE = ("alice", PASSWORDS["alice"])
BOB = ("bob", PASSWORDS["bob"])


def challenge_scope(response: httpx.Response) -> str:
    assert response.status_code == 401, (response.status_code, response.text[:300])
    match = re.search(r'scope="([^"]*)"', response.headers["www-authenticate"])
    assert match, response.headers["www-authenticate"]
    return match.group(1)


@pytest.fixture(scope="module")
def images(upstream: RunningServer) -> dict[str, im.Image]:
    """Upstream-side repositories the module's cache reaches under three host names."""
    made = {repo: im.simple_image(f"rules-{repo}") for repo in ("library/rules-app", "org/rules-app")}
    with httpx.Client(timeout=30) as http:
        for repo, image in made.items():
            push_image(http, upstream.url, repo, image, "1")
    return made


@pytest.fixture(scope="module")
def authcache(tmp_path_factory: pytest.TempPathFactory, upstream: RunningServer,
              images: dict[str, im.Image]) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("rules-cache")
    base = auth_config(workdir, PASSWORDS, RULES, basic=True)
    hosts = [upstream_entry(host, upstream.url) for host in ("docker.io", "ghcr.io", "quay.io")]
    yield from serving(start_cargobay(workdir, config=cache_config(workdir, hosts, base, default="docker.io")))


def test_a_user_may_pull_through_docker_io_in_each_of_the_three_ways(
        authcache: RunningServer, images: dict[str, im.Image]) -> None:
    image = images["library/rules-app"]
    ways = [("docker.io/library/rules-app", {}), ("library/rules-app", {"ns": "docker.io"}),
            ("rules-app", {"ns": "docker.io"}), ("library/rules-app", {}), ("rules-app", {})]
    for repo, params in ways:
        r = get_manifest(authcache.url, repo, "1", params=params)
        assert challenge_scope(r) == "repository:docker.io/library/rules-app:pull", (repo, params)
        with httpx.Client(auth=ALICE, timeout=30) as alice:
            r = alice.get(f"{authcache.url}/v2/{repo}/manifests/1", params=params,
                          headers={"Accept": image.media_type})
        assert r.status_code == 200 and r.content == image.manifest, (repo, params, r.status_code, r.text[:300])
    # the Docker token flow with the scope the challenge named
    token = get_token(authcache.url, "alice", "repository:docker.io/library/rules-app:pull")
    assert_same_image(pull(authcache.url, "library/rules-app", "1", params={"ns": "docker.io"},
                           headers=bearer(token)), image)


def test_a_user_without_a_rule_for_an_upstream_is_denied_it(
        authcache: RunningServer, images: dict[str, im.Image]) -> None:
    for repo, params in [("ghcr.io/org/rules-app", {}), ("org/rules-app", {"ns": "ghcr.io"})]:
        error_of(httpx.get(f"{authcache.url}/v2/{repo}/manifests/1", params=params, auth=ALICE, timeout=30),
                 403, "DENIED")
        with httpx.Client(auth=BOB, timeout=30) as bob:
            r = bob.get(f"{authcache.url}/v2/{repo}/manifests/1", params=params,
                        headers={"Accept": images["org/rules-app"].media_type})
        assert r.status_code == 200 and r.content == images["org/rules-app"].manifest, r.text[:300]
    # bob may pull ghcr.io/*, not docker.io/*: also not through the default upstream
    for repo, params in [("docker.io/library/rules-app", {}), ("rules-app", {"ns": "docker.io"}), ("rules-app", {})]:
        error_of(httpx.get(f"{authcache.url}/v2/{repo}/manifests/1", params=params, auth=BOB, timeout=30),
                 403, "DENIED")
    # a token for a cached name grants nothing under another prefix
    token = get_token(authcache.url, "alice", "repository:ghcr.io/org/rules-app:pull")
    r = httpx.get(f"{authcache.url}/v2/ghcr.io/org/rules-app/manifests/1", headers=bearer(token), timeout=30)
    assert r.status_code in (401, 403), r.status_code


def test_anonymous_pull_granted_for_one_upstream(authcache: RunningServer, images: dict[str, im.Image]) -> None:
    image = images["org/rules-app"]
    assert_same_image(pull(authcache.url, "quay.io/org/rules-app", "1"), image)
    assert manifest_digest(authcache.url, "org/rules-app", "1", params={"ns": "quay.io"}) == image.digest
    error_of(get_manifest(authcache.url, "ghcr.io/org/rules-app", "1"), 401, "UNAUTHORIZED")
    error_of(get_manifest(authcache.url, "docker.io/library/rules-app", "1"), 401, "UNAUTHORIZED")


def test_push_rights_on_a_cached_name_change_nothing_and_local_names_keep_their_rules(
        authcache: RunningServer, images: dict[str, im.Image]) -> None:
    # alice has push on docker.io/*: the upload is still refused, as for everyone
    r = httpx.post(f"{authcache.url}/v2/docker.io/library/rules-app/blobs/uploads/", auth=ALICE, timeout=30)
    assert "docker.io" in error_of(r, 405, "UNSUPPORTED")
    local = im.simple_image("rules-local")
    with httpx.Client(auth=ALICE, timeout=30) as alice:
        push_image(alice, authcache.url, "team-a/app", local, "v1")
        assert alice.get(f"{authcache.url}/v2/team-a/app/manifests/v1",
                         headers={"Accept": local.media_type}).content == local.manifest
    error_of(httpx.get(f"{authcache.url}/v2/team-a/app/manifests/v1", auth=BOB, timeout=30), 403, "DENIED")
    log = authcache.log()
    for password in PASSWORDS.values():
        assert password not in log
