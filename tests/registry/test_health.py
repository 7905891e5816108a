"""`/healthz`: 200 while storage answers, 503 with the OCI error JSON while it fails or hangs, back
to 200 by itself, never behind authentication, and one storage call however many probes come."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from ocispec.errors import ErrorCode
from registry import routes
from registry.access import Access
from registry.app import create_app
from registry.errors import RegistryError
from registry.handlers import health
from registry.settings import load_settings
from storage import Storage, StorageUnavailable
from storage.driver.fs import FilesystemDriver


class FlakyDriver(FilesystemDriver):
    """A filesystem driver whose `stat` can be made to fail or hang, and counts its calls."""

    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.failing = False
        self.hang = 0.0
        self.stats = 0
        self._lock = threading.Lock()

    def stat(self, key: str) -> Any:
        with self._lock:
            self.stats += 1
        if self.hang:
            time.sleep(self.hang)
        if self.failing:
            raise StorageUnavailable("S3 is unreachable (EndpointConnectionError on head_object)")
        return super().stat(key)


class DenyEverything:
    async def authorize(self, request: Request, needed: list[Access]) -> None:
        raise RegistryError(ErrorCode.UNAUTHORIZED, headers={"WWW-Authenticate": 'Bearer realm="x"'})

    async def permits(self, request: Request, access: Access) -> bool:
        return False


@pytest.fixture
def flaky(tmp_path: Path) -> FlakyDriver:
    return FlakyDriver(tmp_path / "store")


def client_for(driver: FlakyDriver, authorizer: Any = None) -> TestClient:
    settings = load_settings(environ={})
    return TestClient(create_app(settings, storage=Storage(driver), authorizer=authorizer))


def test_healthy_storage_answers_200_even_when_empty(flaky: FlakyDriver) -> None:
    client = client_for(flaky)
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"storage": "ok"}
    assert r.headers["cache-control"] == "no-store"
    head = client.head("/healthz")
    assert head.status_code == 200 and head.content == b""


def test_failing_storage_is_503_unavailable_and_recovers_by_itself(flaky: FlakyDriver) -> None:
    client = client_for(flaky)
    flaky.failing = True
    r = client.get("/healthz")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/json")
    (error,) = r.json()["errors"]
    assert error["code"] == "UNAVAILABLE" and "unreachable" in error["message"]
    assert client.get("/healthz").status_code == 503  # failures are not cached away
    flaky.failing = False
    assert client.get("/healthz").status_code == 200


def test_hanging_storage_is_503_within_the_probe_timeout(flaky: FlakyDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "PROBE_TIMEOUT", 0.3)
    flaky.hang = 1.5
    client = client_for(flaky)
    started = time.monotonic()
    r = client.get("/healthz")
    assert r.status_code == 503 and "did not answer within 0.3s" in r.json()["errors"][0]["message"]
    assert time.monotonic() - started < 1.2
    # A probe while the hanging call still runs joins it rather than starting another.
    assert client.get("/healthz").status_code == 503
    assert flaky.stats == 1
    flaky.hang = 0
    time.sleep(1.5)
    assert client.get("/healthz").status_code == 200


def test_health_needs_no_credentials_whatever_the_authorizer(flaky: FlakyDriver) -> None:
    client = client_for(flaky, DenyEverything())
    assert client.get("/v2/").status_code == 401
    assert client.get("/healthz").status_code == 200
    assert routes.declared_access()[("/healthz", "GET")] is routes.access.public


def test_successes_are_reused_briefly(flaky: FlakyDriver) -> None:
    client = client_for(flaky)
    for _ in range(20):
        assert client.get("/healthz").status_code == 200
    assert flaky.stats == 1
