"""Fixtures for the puller tests: real registries on loopback, image pushing, and running the
`python -m puller` CLI as a subprocess with an isolated home, config and store."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.faultproxy import Proxy, ProxyConfig
from tests.support.servers import REPO_ROOT, RunningServer, start_cargobay, start_distribution


def _cargobay_available() -> bool:
    return importlib.util.find_spec("registry") is not None and (REPO_ROOT / "registry" / "__main__.py").exists()


@pytest.fixture(scope="session")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_distribution(tmp_path_factory.mktemp("distribution"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cargobay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if not _cargobay_available():
        pytest.skip("the Cargobay registry has no `python -m registry serve` in this tree yet")
    server = start_cargobay(tmp_path_factory.mktemp("cargobay"))
    yield server
    server.stop()


@pytest.fixture(params=["distribution", "cargobay"])
def registry(request: pytest.FixtureRequest) -> RunningServer:
    """Each test using this runs against Distribution and against Cargobay's own registry."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def upstream(distribution: RunningServer) -> RunningServer:
    """The registry behind proxies (one implementation is enough for transport behaviour)."""
    return distribution


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test (registries are shared by the session)."""
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    return f"puller-tests/t{digest}"


@dataclass
class PullerRunner:
    home: Path
    store: Path
    env: dict[str, str]

    def run(self, *args: str, input: str | None = None, timeout: float = 120, env: dict[str, str] | None = None,
            store: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "puller"]
        if store:
            argv += ["--store", str(self.store)]
        return subprocess.run([*argv, *args], input=input, capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})}, cwd=REPO_ROOT)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "puller", "--store", str(self.store), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.env, **(env or {})}, cwd=REPO_ROOT)

    def ok(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, \
            f"puller {' '.join(args)} failed ({result.returncode}):\n{result.stderr}\n{result.stdout}"
        return result

    def events(self, result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
        return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    def write_config(self, text: str) -> Path:
        path = self.home / "puller.toml"
        path.write_text(text)
        self.env["PULLER_CONFIG"] = str(path)
        return path


FAST_NETWORK = "[network]\nretries = 4\nbackoff = 0.05\nread_timeout = 2\nconnect_timeout = 2\n"


@pytest.fixture
def puller(tmp_path: Path) -> PullerRunner:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PULLER_CONFIG", "PULLER_STORE", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                "XDG_DATA_HOME": str(home / ".local/share"),
                "PYTHONPATH": str(REPO_ROOT)})
    runner = PullerRunner(home, tmp_path / "store", env)
    runner.write_config(FAST_NETWORK)
    return runner


@pytest.fixture
def make_proxy(upstream: RunningServer) -> Iterator[object]:
    proxies: list[Proxy] = []

    def factory(config: ProxyConfig | None = None, target: str | None = None, host: str = "127.0.0.1",
                tls: tuple[str, str] | None = None) -> Proxy:
        proxy = Proxy(target or upstream.url, config, host, tls)
        proxies.append(proxy)
        return proxy

    yield factory
    for proxy in proxies:
        proxy.stop()


def verify_store(store: Path) -> dict[str, object]:
    """Check a store is a sound OCI layout: every blob matches its name, every image is complete,
    no partial files are left. Returns index.json."""
    assert json.loads((store / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    index = json.loads((store / "index.json").read_text())
    blobs = store / "blobs" / "sha256"
    for path in blobs.iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"corrupt blob {path.name}"
    for entry in index["manifests"]:
        manifest = json.loads((blobs / entry["digest"].split(":")[1]).read_bytes())
        for desc in [manifest["config"], *manifest["layers"]]:
            assert (blobs / desc["digest"].split(":")[1]).stat().st_size == desc["size"]
    assert not list((store / ".puller" / "ingest").iterdir()), "partial downloads left behind"
    return index
