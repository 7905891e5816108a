"""Authentication: the bearer-token flow against a test token server, Basic auth, credentials from
Docker's config.json / containers' auth.json / credential helpers, login and logout, and
credentials never following a redirect to another host."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import httpx

from tests.support import images as im
from tests.support.faultproxy import ProxyConfig
from tests.support.images import push_image
from tests.support.servers import RunningServer

from .conftest import FAST_NETWORK, PullerRunner, verify_store
from .fakes import ScriptedServer, Seen
from .test_tls import self_signed


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_token_flow_anonymous_and_with_credentials(upstream: RunningServer, http: httpx.Client, repo: str,
                                                    make_proxy: object, puller: PullerRunner) -> None:
    public, private = f"{repo}/public", f"{repo}/private"
    push_image(http, upstream.url, public, im.simple_image("pub"), "v1")
    push_image(http, upstream.url, private, im.simple_image("priv"), "v1")
    proxy = make_proxy(ProxyConfig(token_auth=True, users={"alice": "s3cret"}, public={public}))  # type: ignore[operator]

    puller.ok("fetch", "--plain-http", f"{proxy.hostport}/{public}:v1")
    scopes = {s for r in proxy.token_requests for s in r.query.get("scope", [])}
    assert scopes == {f"repository:{public}:pull"}
    assert all("Authorization" not in r.headers for r in proxy.token_requests)  # anonymous

    denied = puller.run("fetch", "--plain-http", f"{proxy.hostport}/{private}:v1")
    assert denied.returncode == 4 and len(denied.stderr.splitlines()) == 1

    auth_file = puller.home / "auth.json"
    env = {"REGISTRY_AUTH_FILE": str(auth_file)}
    bad = puller.run("login", "--plain-http", "-u", "alice", "-p", "wrong", proxy.hostport, env=env)
    assert bad.returncode == 4 and not auth_file.exists()
    puller.ok("login", "--plain-http", "-u", "alice", "--password-stdin", proxy.hostport, input="s3cret\n", env=env)
    saved = json.loads(auth_file.read_text())
    assert saved == {"auths": {proxy.hostport: {"auth": b64("alice:s3cret")}}}
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600

    before = len(proxy.token_requests)
    puller.ok("fetch", "--plain-http", f"{proxy.hostport}/{private}:v1", env=env)
    token_request = proxy.token_requests[before]
    assert token_request.headers["Authorization"] == "Basic " + b64("alice:s3cret")
    assert token_request.query["service"] == ["test-proxy"]
    # The registry itself only ever saw the bearer token, never the password.
    assert not any(r.headers.get("Authorization", "").startswith("Basic") for r in proxy.requests if r.path != "/token")

    assert "Removed" in puller.ok("logout", proxy.hostport, env=env).stdout
    assert json.loads(auth_file.read_text()) == {"auths": {}}
    assert "Not logged in" in puller.ok("logout", proxy.hostport, env=env).stdout
    puller.ok("rm", f"{proxy.hostport}/{private}:v1")
    assert puller.run("fetch", "--plain-http", f"{proxy.hostport}/{private}:v1", env=env).returncode == 4


def test_basic_auth_from_docker_config(upstream: RunningServer, http: httpx.Client, repo: str,
                                       make_proxy: object, puller: PullerRunner) -> None:
    push_image(http, upstream.url, repo, im.simple_image("basic"), "v1")
    proxy = make_proxy(ProxyConfig(basic_auth=True, users={"bob": "pw"}))  # type: ignore[operator]
    ref = f"{proxy.hostport}/{repo}:v1"
    assert puller.run("fetch", "--plain-http", ref).returncode == 4
    docker_dir = puller.home / ".docker"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps({
        "auths": {f"http://{proxy.hostport}/v1/": {"username": "bob", "password": "pw"}},
        "HttpHeaders": {"User-Agent": "kept"}}))
    puller.ok("fetch", "--plain-http", ref)
    # login/logout keep the rest of Docker's file and use its key format for docker.io.
    puller.ok("login", "--plain-http", "-u", "bob", "-p", "pw", proxy.hostport)
    data = json.loads((docker_dir / "config.json").read_text())
    assert data["HttpHeaders"] == {"User-Agent": "kept"}
    assert data["auths"] == {proxy.hostport: {"auth": b64("bob:pw")}}
    puller.ok("logout", proxy.hostport)
    assert json.loads((docker_dir / "config.json").read_text())["auths"] == {}


def _fake_helper(bin_dir: Path, name: str, store_file: Path) -> None:
    """A `docker-credential-<name>` keeping credentials in a JSON file, speaking the helper protocol."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"""#!{os.sys.executable}
import json, sys
path = {str(store_file)!r}
try:
    data = json.load(open(path))
except FileNotFoundError:
    data = {{}}
action, payload = sys.argv[1], sys.stdin.read()
if action == "get":
    entry = data.get(payload.strip())
    if not entry:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({{"ServerURL": payload.strip(), **entry}}))
elif action == "store":
    obj = json.loads(payload)
    data[obj["ServerURL"]] = {{"Username": obj["Username"], "Secret": obj["Secret"]}}
    json.dump(data, open(path, "w"))
elif action == "erase":
    data.pop(payload.strip(), None)
    json.dump(data, open(path, "w"))
""")
    script.chmod(0o755)


def test_credential_helpers(upstream: RunningServer, http: httpx.Client, repo: str,
                            make_proxy: object, puller: PullerRunner) -> None:
    push_image(http, upstream.url, repo, im.simple_image("helper"), "v1")
    proxy = make_proxy(ProxyConfig(token_auth=True, users={"carol": "pw"}))  # type: ignore[operator]
    bin_dir, keychain = puller.home / "bin", puller.home / "keychain.json"
    _fake_helper(bin_dir, "fake", keychain)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    docker_dir = puller.home / ".docker"
    docker_dir.mkdir()
    config = docker_dir / "config.json"
    # credHelpers for this host: login stores through the helper, the file keeps an empty entry.
    config.write_text(json.dumps({"credHelpers": {proxy.hostport: "fake"}}))
    puller.ok("login", "--plain-http", "-u", "carol", "-p", "pw", proxy.hostport, env=env)
    assert json.loads(keychain.read_text()) == {proxy.hostport: {"Username": "carol", "Secret": "pw"}}
    assert "pw" not in config.read_text()
    puller.ok("fetch", "--plain-http", f"{proxy.hostport}/{repo}:v1", env=env)
    # credsStore for every host.
    config.write_text(json.dumps({"credsStore": "fake", "auths": {}}))
    puller.ok("rm", f"{proxy.hostport}/{repo}:v1")
    puller.ok("fetch", "--plain-http", f"{proxy.hostport}/{repo}:v1", env=env)
    puller.ok("logout", proxy.hostport, env=env)
    assert json.loads(keychain.read_text()) == {}
    puller.ok("rm", f"{proxy.hostport}/{repo}:v1")
    assert puller.run("fetch", "--plain-http", f"{proxy.hostport}/{repo}:v1", env=env).returncode == 4


def test_redirect_to_another_host_drops_credentials(upstream: RunningServer, http: httpx.Client, repo: str,
                                                    make_proxy: object, puller: PullerRunner) -> None:
    image = im.simple_image("redirect", layer_count=3)
    push_image(http, upstream.url, repo, image, "v1")
    storage = make_proxy(host="localhost")  # type: ignore[operator]  # "another host": a different netloc
    registry = make_proxy(ProxyConfig(basic_auth=True, users={"dave": "pw"},  # type: ignore[operator]
                                      redirect_blobs_to=storage.url))
    auth_file = puller.home / "auth.json"
    auth_file.write_text(json.dumps({"auths": {registry.hostport: {"auth": b64("dave:pw")}}}))
    puller.ok("fetch", "--plain-http", f"{registry.hostport}/{repo}:v1", env={"REGISTRY_AUTH_FILE": str(auth_file)})
    blob_gets = [r for r in storage.requests if "/blobs/" in r.path]
    assert len(blob_gets) == len(image.blobs())
    assert all("Authorization" not in r.headers for r in blob_gets)
    assert any(r.headers.get("Authorization", "").startswith("Basic") for r in registry.requests)
    verify_store(puller.store)


def test_no_credentials_along_a_redirect_to_plain_http_on_the_same_host(upstream: RunningServer, http: httpx.Client,
                                                                        repo: str, puller: PullerRunner,
                                                                        tmp_path: Path) -> None:
    """An HTTPS registry that sends a manifest GET, or a push's upload, to http:// on its own host
    and port: the password must not cross the wire in clear (the port here speaks both)."""
    cert, key = self_signed(tmp_path)
    good = "Basic " + b64("erin:pw")

    def script(seen: Seen, _: object) -> tuple[int, dict[str, str], bytes]:
        if not seen.tls or seen.headers.get("Authorization") != good:
            return 401, {"WWW-Authenticate": 'Basic realm="r"'}, b""
        if seen.method == "GET" and "/manifests/" in seen.path:
            return 302, {"Location": f"http://{server.hostport}{seen.path}"}, b""
        if seen.method == "POST":
            return 202, {"Location": f"http://{server.hostport}/upload/1"}, b""
        return 404, {}, b""

    server = ScriptedServer(script, tls=(cert, key))
    try:
        push_image(http, upstream.url, repo, im.simple_image("downgrade"), "v1")
        puller.ok("fetch", "--plain-http", f"{upstream.hostport}/{repo}:v1")
        auth_file = puller.home / "auth.json"
        auth_file.write_text(json.dumps({"auths": {server.hostport: {"auth": b64("erin:pw")}}}))
        puller.write_config(FAST_NETWORK + f'[hosts."{server.hostport}"]\nca_file = "{cert}"\n')
        env = {"REGISTRY_AUTH_FILE": str(auth_file)}

        assert puller.run("fetch", f"{server.hostport}/app:v1", env=env).returncode == 4
        pushed = puller.run("push", f"{upstream.hostport}/{repo}:v1", f"{server.hostport}/app:v1", env=env)
        assert pushed.returncode == 4
        plain = [s for s in server.seen if not s.tls]
        assert {s.method for s in plain} == {"GET", "PUT"}  # both redirects were followed, and
        assert not [s for s in plain if any(k.lower() == "authorization" for k in s.headers)]  # carried no password
        assert any(s.headers.get("Authorization") == good for s in server.seen if s.tls)
    finally:
        server.stop()


def test_credentials_of_a_host_reached_through_its_config_server(upstream: RunningServer, http: httpx.Client,
                                                                  repo: str, make_proxy: object,
                                                                  puller: PullerRunner) -> None:
    """`server =` sends a host's requests elsewhere; login and fetch still use that host's credentials."""
    push_image(http, upstream.url, repo, im.simple_image("server-override"), "v1")
    proxy = make_proxy(ProxyConfig(basic_auth=True, users={"frank": "pw"}))  # type: ignore[operator]
    puller.write_config(FAST_NETWORK + f'[hosts."registry.test"]\nserver = "{proxy.url}"\n')
    env = {"REGISTRY_AUTH_FILE": str(puller.home / "auth.json")}
    failed = puller.run("fetch", f"registry.test/{repo}:v1", env=env)
    assert failed.returncode == 4 and "puller login registry.test" in failed.stderr
    assert puller.run("login", "-u", "frank", "-p", "wrong", "registry.test", env=env).returncode == 4
    puller.ok("login", "-u", "frank", "-p", "pw", "registry.test", env=env)
    assert list(json.loads((puller.home / "auth.json").read_text())["auths"]) == ["registry.test"]
    puller.ok("fetch", f"registry.test/{repo}:v1", env=env)
    assert any(r.headers.get("Authorization") == "Basic " + b64("frank:pw") for r in proxy.requests)
    verify_store(puller.store)


def test_login_to_something_that_is_not_a_registry_fails(puller: PullerRunner) -> None:
    """A web server without the /v2/ API (404, or a redirect to a login page) is no registry, as
    Docker says: nothing is stored."""
    answers = iter([(404, {}, b"<html>not found</html>"), (302, {"Location": "/login"}, b"")])
    current = next(answers)
    server = ScriptedServer(lambda seen, _: current)
    env = {"REGISTRY_AUTH_FILE": str(puller.home / "auth.json")}
    try:
        for _ in range(2):
            result = puller.run("login", "--plain-http", "-u", "u", "-p", "p", server.hostport, env=env)
            assert result.returncode == 1 and "does not look like a registry" in result.stderr
            assert f"HTTP {current[0]}" in result.stderr and len(result.stderr.splitlines()) == 1
            assert not (puller.home / "auth.json").exists()
            current = next(answers, current)
    finally:
        server.stop()


def test_credentials_go_to_a_plain_http_realm_elsewhere_only_when_the_config_names_it(puller: PullerRunner) -> None:
    """A plain-HTTP registry whose challenge names a plain-HTTP token realm on another origin
    (another port, or another name for the same port) gets no password sent there, unless the
    host's `token_realms` lists that realm. Anonymous token requests carry nothing and go ahead."""
    realm = {"url": ""}
    manifest_unknown = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}'

    def token_server(seen: Seen, _: object) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": "tok"}).encode()

    def registry_script(seen: Seen, handler: object) -> tuple[int, dict[str, str], bytes]:
        if seen.path.startswith("/token"):
            return token_server(seen, handler)
        if seen.headers.get("Authorization") != "Bearer tok":
            return 401, {"WWW-Authenticate": f'Bearer realm="{realm["url"]}",service="reg"'}, b""
        return 404, {"Content-Type": "application/json"}, manifest_unknown

    auth, registry = ScriptedServer(token_server), ScriptedServer(registry_script)
    try:
        ref = f"{registry.hostport}/app:v1"
        auth_file = puller.home / "auth.json"
        auth_file.write_text(json.dumps({"auths": {registry.hostport: {"auth": b64("gail:pw")}}}))
        env = {"REGISTRY_AUTH_FILE": str(auth_file)}
        other_port, other_name = f"http://{auth.hostport}/token", f"http://localhost:{registry.port}/token"
        for url in (other_port, other_name):
            realm["url"] = url
            refused = puller.run("fetch", "--plain-http", ref, env=env)
            assert refused.returncode == 4 and len(refused.stderr.splitlines()) == 1, refused.stderr
            assert f"refusing to send credentials in clear to the plain-HTTP token realm {url}" in refused.stderr
            assert f'token_realms under [hosts."{registry.hostport}"]' in refused.stderr
        assert not auth.seen and not [s for s in registry.seen if "Authorization" in s.headers]

        realm["url"] = other_port
        assert puller.run("fetch", "--plain-http", ref).returncode == 3  # anonymous: a token, then not found
        assert auth.seen and all("Authorization" not in s.headers for s in auth.seen)

        auth.seen.clear()
        puller.write_config(FAST_NETWORK + f'[hosts."{registry.hostport}"]\ninsecure = true\n'
                            f'token_realms = ["{other_port}"]\n')
        assert puller.run("fetch", ref, env=env).returncode == 3
        assert [s.headers.get("Authorization") for s in auth.seen] == ["Basic " + b64("gail:pw")]
        realm["url"] = other_name  # not listed: still refused
        assert puller.run("fetch", ref, env=env).returncode == 4
    finally:
        auth.stop()
        registry.stop()
