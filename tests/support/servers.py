"""Real server processes on loopback ports: Cargobay (`python -m registry serve`) and CNCF
Distribution (Debian's `docker-registry`), started and stopped by the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from .leaks import watch_file
from .tools import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    root: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        try:  # the server runs in a session of its own: leftovers (uvicorn workers) go with it
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until_ready(server: RunningServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            r = httpx.get(f"{server.url}/v2/", timeout=2)
            if r.status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server did not become ready:\n{server.log()}")


def start_cargobay(workdir: Path, config: dict | None = None, env: dict[str, str] | None = None,
                   extra_args: list[str] | None = None, root: Path | None = None, *,
                   python: str = sys.executable, src: Path = REPO_ROOT, inherit_settings: bool = True,
                   ready_timeout: float = 30.0, workers: int | None = 1) -> RunningServer:
    """`python -m registry serve` on a free loopback port, disk storage under `root` (default
    workdir/data) unless `config` says otherwise. `python` and `src` pick another interpreter or
    source tree (benchmarks compare variants); without `inherit_settings`, CARGOBAY_* variables of
    the calling environment are not passed on. The server runs in a session of its own.
    `workers` applies unless `config`, `env` or `extra_args` set them; None: the server's default.
    Tests run one worker unless they ask for more: what a test checks should not depend on which
    worker a request reached (tests of several workers say so), and CI's two cores go further."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root = root or workdir / "data"
    args = [python, "-m", "registry", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if config is not None:
        config_path = workdir / f"config-{port}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        args += ["--config", str(config_path)]
    else:
        args += ["--root", str(root)]
    args += extra_args or []
    log_path = workdir / f"cargobay-{port}.log"
    inherited = {k: v for k, v in os.environ.items() if inherit_settings or not k.startswith("CARGOBAY_")}
    full_env = {**inherited, "PYTHONPATH": str(src), **(env or {})}
    if workers is not None and not _asks_for_workers(config, full_env, args):
        full_env["CARGOBAY_HTTP_WORKERS"] = str(workers)
    watch_file(log_path)  # scanned for secrets when the session ends (tests/support/leaks.py), and the audit file
    audit_path = ((config or {}).get("audit") or {}).get("path") or full_env.get("CARGOBAY_AUDIT_PATH")
    if audit_path:
        watch_file(Path(src, audit_path))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=full_env, cwd=src, start_new_session=True)
    server = RunningServer(f"http://127.0.0.1:{port}", "127.0.0.1", port, process, log_path, root, full_env)
    wait_until_ready(server, ready_timeout)
    return server


def _asks_for_workers(config: dict | None, env: dict[str, str], args: list[str]) -> bool:
    return ("workers" in ((config or {}).get("http") or {}) or "CARGOBAY_HTTP_WORKERS" in env
            or any(arg.startswith("--workers") for arg in args))


def start_distribution(workdir: Path, extra_config: dict | None = None, *, binary: str | None = None,
                       ready_timeout: float = 30.0) -> RunningServer:
    """Debian's docker-registry (CNCF Distribution 2.8) with filesystem storage, deletes enabled;
    `extra_config` replaces whole top-level sections (e.g. `storage` for its s3 driver)."""
    binary = binary or require_tool("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "distribution-data")}, "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    for key, value in (extra_config or {}).items():
        config[key] = value
    config_path = workdir / f"distribution-{port}.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / f"distribution-{port}.log"
    # AWS_* and REGISTRY_* variables of this shell would override the config (an AWS_CA_BUNDLE even
    # breaks its plain-HTTP S3 client at start).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REGISTRY_"))}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    server = RunningServer(f"http://127.0.0.1:{port}", "127.0.0.1", port, process, log_path,
                           workdir / "distribution-data")
    wait_until_ready(server, ready_timeout)
    return server


def serving(server: RunningServer) -> Iterator[RunningServer]:
    """For fixtures: yield the server, stop it afterwards."""
    try:
        yield server
    finally:
        server.stop()
