from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import RunningServer, start_cargobay


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real `registry serve` process with deletes enabled, shared by the API tests (each test
    uses its own repository names)."""
    srv = start_cargobay(tmp_path_factory.mktemp("registry"), env={"CARGOBAY_STORAGE_DELETE_ENABLED": "true"})
    yield srv
    srv.stop()


@pytest.fixture()
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture()
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to the test."""
    name = request.node.name.lower()
    return "t/" + "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")[:100].rstrip("-")


@pytest.fixture()
def data_root(server: RunningServer) -> Path:
    assert server.root is not None
    return server.root
