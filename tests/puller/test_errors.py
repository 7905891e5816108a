"""Every failure a user meets is one line on stderr (`puller: ...`), no traceback, and the exit
status docs/puller.md gives it: a plain-HTTP registry reached without config reports its own
answer, an HTTPS-only host that answers plain HTTP says so, an unreachable host is one line, a
416 during push and unexpected exceptions too."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.support import images as im
from tests.support.faultproxy import ProxyConfig
from tests.support.images import push_image
from tests.support.servers import REPO_ROOT, RunningServer, free_port

from .conftest import FAST_NETWORK, PullerRunner


def one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The one error line of a failed run that exited with `status`."""
    assert result.returncode == status, f"exit {result.returncode}, wanted {status}:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("puller: "), result.stderr
    return lines[0]


def test_a_plain_http_registry_without_config_reports_its_own_answer(upstream: RunningServer, http: httpx.Client,
                                                                      repo: str, make_proxy: object,
                                                                      puller: PullerRunner) -> None:
    """No config entry and no --plain-http: a loopback registry is tried over HTTPS, then plain HTTP;
    what plain HTTP answered (404, 401) is the error, not the HTTPS attempt's TLS failure."""
    push_image(http, upstream.url, repo, im.simple_image("plain-answer"), "v1")
    for command in (["fetch"], ["unpack", "--keep-root-mode"]):
        args = [*command, f"{upstream.hostport}/{repo}:absent"] + ([str(puller.home / "r")] if len(command) > 1 else [])
        line = one_line(puller.run(*args), 3)
        assert "not found" in line and "TLS" not in line and "SSL" not in line

    basic = make_proxy(ProxyConfig(basic_auth=True, users={"ann": "pw"}))  # type: ignore[operator]
    line = one_line(puller.run("fetch", f"{basic.hostport}/{repo}:v1"), 4)
    assert "requires credentials" in line and f"puller login {basic.hostport}" in line
    auth_file = puller.home / "auth.json"
    auth_file.write_text(json.dumps({"auths": {basic.hostport: {"username": "ann", "password": "wrong"}}}))
    line = one_line(puller.run("fetch", f"{basic.hostport}/{repo}:v1", env={"REGISTRY_AUTH_FILE": str(auth_file)}), 4)
    assert "denied" in line and "TLS" not in line
    token = make_proxy(ProxyConfig(token_auth=True))  # type: ignore[operator]
    line = one_line(puller.run("fetch", f"{token.hostport}/{repo}:v1"), 4)  # an anonymous token, no access
    assert "access denied" in line and "TLS" not in line
    # The fallback still serves what exists.
    puller.ok("fetch", f"{upstream.hostport}/{repo}:v1")


def test_an_https_host_that_answers_plain_http_says_how_to_reach_it(upstream: RunningServer, http: httpx.Client,
                                                                    repo: str, puller: PullerRunner) -> None:
    """A host in the config (so: HTTPS only) that speaks plain HTTP: the line says so and names the
    two ways to allow plain HTTP; with `insecure = true` the fetch works."""
    push_image(http, upstream.url, repo, im.simple_image("https-only"), "v1")
    host = upstream.hostport
    puller.write_config(FAST_NETWORK + f'[hosts."{host}"]\ntls_verify = true\n')
    line = one_line(puller.run("fetch", f"{host}/{repo}:v1"), 6)
    assert f"{host} answered in plain HTTP" in line and "--plain-http" in line and "insecure = true" in line
    assert one_line(puller.run("login", "-u", "a", "-p", "b", host), 6) == line
    puller.write_config(FAST_NETWORK + f'[hosts."{host}"]\ninsecure = true\n')
    puller.ok("fetch", f"{host}/{repo}:v1")


def test_an_unreachable_host_is_one_line(puller: PullerRunner) -> None:
    port = free_port()  # nothing listens there
    for args in (["fetch", f"127.0.0.1:{port}/app:v1"], ["fetch", "--plain-http", f"127.0.0.1:{port}/app:v1"],
                 ["login", "-u", "a", "-p", "b", f"127.0.0.1:{port}"]):
        line = one_line(puller.run(*args), 6)
        assert line.startswith(f"puller: cannot reach 127.0.0.1:{port}: connection refused"), line
    puller.write_config(FAST_NETWORK.replace("retries = 4", "retries = 0"))
    line = one_line(puller.run("fetch", "no-such-host.invalid/app:v1"), 6)
    assert line.startswith("puller: cannot reach no-such-host.invalid: the name does not resolve"), line


def test_a_416_during_push_is_one_line(upstream: RunningServer, http: httpx.Client, repo: str, make_proxy: object,
                                       puller: PullerRunner) -> None:
    push_image(http, upstream.url, repo, im.simple_image("push-416"), "v1")
    puller.ok("fetch", "--plain-http", f"{upstream.hostport}/{repo}:v1")
    proxy = make_proxy()  # type: ignore[operator]
    # (The upload PUT goes to the Location the registry gives, beyond the proxy: refuse the POST.)
    proxy.add_fault(action="status", path="/blobs/uploads/", status=416, times=-1)
    line = one_line(puller.run("push", "--plain-http", f"{upstream.hostport}/{repo}:v1", f"{proxy.hostport}/copy:v1"),
                    1)
    assert "HTTP 416" in line and "copy/blobs/uploads/" in line


def test_store_and_usage_failures_are_one_line(puller: PullerRunner) -> None:
    assert "invalid reference" in one_line(puller.run("fetch", "Not/A:Reference:x"), 2)
    assert "no such image" in one_line(puller.run("inspect", "nothing:1"), 3)
    assert "not a directory" in one_line(puller.run("images", "--store", "/dev/null/store", store=False), 1).lower()
    puller.ok("images")
    (puller.store / "index.json").write_text("{not json")
    assert "index.json is corrupt" in one_line(puller.run("images"), 1)


def test_an_unexpected_exception_is_one_line_and_debug_shows_where(puller: PullerRunner) -> None:
    code = ("import sys, puller.cli as cli\n"
            "def broken(ctx):\n    raise KeyError('oops\\nsecond line')\n"
            "cli.COMMANDS['images'] = broken\n"
            "sys.exit(cli.main(['--store', sys.argv[1], 'images']))\n")

    def run(debug: bool) -> subprocess.CompletedProcess[str]:
        env = {**puller.env, **({"PULLER_DEBUG": "1"} if debug else {})}
        return subprocess.run([sys.executable, "-c", code, str(puller.store)], capture_output=True, text=True,
                              env=env, cwd=REPO_ROOT, timeout=60)

    line = one_line(run(False), 1)
    assert "unexpected error: KeyError" in line and "PULLER_DEBUG=1" in line
    debug = run(True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "in broken" in debug.stderr


def test_config_mistakes_are_one_line_usage_errors(puller: PullerRunner) -> None:
    for text, said in (('[network]\nmin_free_space = "1GiB"\n', "unknown config key 'min_free_space' in [network]"),
                       ('min_free_space = "lots"\n', "min_free_space: invalid free-space reserve 'lots'"),
                       ('min_free_space = "100%"\n', "a percentage from 0 to below 100"),
                       ('[hosts."h:1"]\ntoken_realm = ["http://a/t"]\n', "unknown config key 'token_realm'"),
                       ('[hosts."h:1"]\ntoken_realms = "http://a/t"\n', "hosts.h:1.token_realms must be a list"),
                       ('[hosts."h:1"]\ntoken_realms = ["a/t"]\n', "invalid URL 'a/t'")):
        puller.write_config(text)
        assert said in one_line(puller.run("fetch", "h:1/app:v1"), 2)
