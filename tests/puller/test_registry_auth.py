"""Real token authentication: Cargobay's own registry with auth on (htpasswd users, access rules,
its token endpoint), and Distribution configured to trust tokens Cargobay issues (JWTs verified by
an independent implementation). The puller logs in, fetches what it may and is refused the rest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import RunningServer, start_cargobay, start_distribution

from .conftest import FAST_NETWORK, PullerRunner, _cargobay_available, verify_store

SERVICE, ISSUER, DIST_SERVICE = "cargobay-puller", "cargobay-puller-issuer", "distribution-puller"
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "admin": "admin-pw-3"}
RULES = """\
anonymous_pull: ["public/*"]
rules:
  - users: [alice]
    repositories: ["team-a/*"]
    actions: [pull]
  - users: [admin]
    repositories: ["*"]
    actions: ["*"]
"""


@pytest.fixture(scope="module")
def token_registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, RunningServer]]:
    if not _cargobay_available():
        pytest.skip("the Cargobay registry has no `python -m registry serve` in this tree yet")
    work = tmp_path_factory.mktemp("token-auth")
    (work / "htpasswd").write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode()}\n"
                                           for u, p in USERS.items()))
    (work / "rules.yaml").write_text(RULES)
    cargobay = start_cargobay(work / "cargobay", config={
        "storage": {"filesystem": {"root": str(work / "data")}},
        "auth": {"enabled": True, "service": SERVICE, "htpasswd": str(work / "htpasswd"),
                 "rules": str(work / "rules.yaml"),
                 "token": {"issuer": ISSUER, "key_dir": str(work / "keys"), "extra_services": DIST_SERVICE}},
    })
    distribution = None
    try:
        distribution = start_distribution(work / "distribution", {"auth": {"token": {
            "realm": f"{cargobay.url}/auth/token", "service": DIST_SERVICE, "issuer": ISSUER,
            "rootcertbundle": str(work / "keys" / "token-cert.pem")}}})
        yield cargobay, distribution
    finally:
        if distribution:
            distribution.stop()
        cargobay.stop()


def admin_client(cargobay: RunningServer, service: str, repos: list[str]) -> httpx.Client:
    r = httpx.get(f"{cargobay.url}/auth/token", auth=("admin", USERS["admin"]), timeout=30,
                  params=[("service", service)] + [("scope", f"repository:{repo}:pull,push") for repo in repos])
    r.raise_for_status()
    return httpx.Client(timeout=30, headers={"Authorization": f"Bearer {r.json()['token']}"})


@pytest.mark.parametrize("which", ["cargobay", "distribution"])
def test_login_and_token_flow(token_registries: tuple[RunningServer, RunningServer], which: str,
                              puller: PullerRunner, tmp_path: Path) -> None:
    cargobay, distribution = token_registries
    server, service = (cargobay, SERVICE) if which == "cargobay" else (distribution, DIST_SERVICE)
    public, private = im.simple_image(f"public-{which}"), im.simple_image(f"private-{which}")
    with admin_client(cargobay, service, ["public/app", "team-a/app"]) as client:
        push_image(client, server.url, "public/app", public, "v1")
        push_image(client, server.url, "team-a/app", private, "v1")
    host = server.hostport
    if which == "distribution":  # its realm is Cargobay's, another origin over plain HTTP: allow it
        puller.write_config(FAST_NETWORK + f'[hosts."{host}"]\ntoken_realms = ["{cargobay.url}/auth/token"]\n')

    puller.ok("fetch", "--plain-http", f"{host}/public/app:v1")  # anonymous pull allowed by the rules
    refused = puller.run("fetch", "--plain-http", f"{host}/team-a/app:v1")
    assert refused.returncode == 4 and len(refused.stderr.splitlines()) == 1

    env = {"REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
    assert puller.run("login", "--plain-http", "-u", "alice", "-p", "wrong", host, env=env).returncode == 4
    puller.ok("login", "--plain-http", "-u", "bob", "-p", USERS["bob"], host, env=env)
    assert puller.run("fetch", "--plain-http", f"{host}/team-a/app:v1", env=env).returncode == 4  # no rule for bob
    puller.ok("login", "--plain-http", "-u", "alice", "--password-stdin", host, input=USERS["alice"], env=env)
    assert list(json.loads((tmp_path / "auth.json").read_text())["auths"]) == [host]
    puller.ok("fetch", "--plain-http", f"{host}/team-a/app:v1", env=env)
    assert "up to date" in puller.ok("fetch", "--plain-http", f"{host}/team-a/app:v1", env=env).stdout
    verify_store(puller.store)
    # Pushing needs push rights: alice only pulls, admin may.
    copy = f"{host}/team-a/copy:v1"
    assert puller.run("push", "--plain-http", f"{host}/team-a/app:v1", copy, env=env).returncode == 4
    puller.ok("login", "--plain-http", "-u", "admin", "-p", USERS["admin"], host, env=env)
    puller.ok("push", "--plain-http", f"{host}/team-a/app:v1", copy, env=env)
    puller.ok("login", "--plain-http", "-u", "alice", "-p", USERS["alice"], host, env=env)
    puller.ok("logout", host, env=env)
    puller.ok("rm", f"{host}/team-a/app:v1")
    assert puller.run("fetch", "--plain-http", f"{host}/team-a/app:v1", env=env).returncode == 4
