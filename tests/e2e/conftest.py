"""Fixtures for the end-to-end tests: one real Cargobay process per test module (deletes enabled, access
log on, a small page size so that clients must follow `Link` headers), and the real clients.

Locally a missing client skips its tests; with CARGOBAY_REQUIRE_TOOLS=1 (CI) it fails them, and so does
a client that is installed but cannot work in this environment (the preflight below says why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.servers import RunningServer, serving, start_cargobay, start_distribution
from tests.support.tools import require_tool

from .clients import CommandFailed, Engine, Skopeo, buildah, client_env, podman

PAGE_SIZE = 5  # limits.max_page_size of the module servers: tag lists longer than this come in pages

CARGOBAY_ENV = {
    "CARGOBAY_STORAGE_DELETE_ENABLED": "true",
    "CARGOBAY_LOG_ACCESS": "true",  # test_skopeo reads the access log to see cross-repository mounts
    "CARGOBAY_LOG_LEVEL": "info",
    "CARGOBAY_LIMITS_MAX_PAGE_SIZE": str(PAGE_SIZE),
}


@pytest.fixture(scope="module")
def cargobay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serving(start_cargobay(tmp_path_factory.mktemp("cargobay"), env=CARGOBAY_ENV))


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Debian's docker-registry (CNCF Distribution 2.8), the reference implementation."""
    yield from serving(start_distribution(tmp_path_factory.mktemp("distribution")))


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    return Skopeo(require_tool("skopeo"), client_env(tmp_path_factory.mktemp("skopeo-conf")))


def _preflight(engine: Engine, what: str) -> None:
    """Fail early, with the client's own words, when it cannot work here (cgroups, namespaces, storage)."""
    try:
        engine("info")
        engine("images")
    except CommandFailed as e:
        pytest.fail(f"{what} is installed but unusable in this environment with flags {engine.global_flags} "
                    f"and BUILDAH_ISOLATION=chroot:\n{e}")
    finally:
        engine.close()


@pytest.fixture(scope="session")
def podman_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    binary = require_tool("podman")
    _preflight(podman(binary, tmp_path_factory.mktemp("podman-preflight")), "podman")
    return binary


@pytest.fixture(scope="session")
def buildah_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    binary = require_tool("buildah")
    _preflight(buildah(binary, tmp_path_factory.mktemp("buildah-preflight")), "buildah")
    return binary


def _engines(factory: Callable[[str, Path], Engine], binary: str, tmp_path: Path, kind: str
             ) -> Iterator[Callable[[str], Engine]]:
    made: list[Engine] = []

    def make(name: str) -> Engine:
        made.append(factory(binary, tmp_path / f"{kind}-{name}"))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def make_podman(podman_binary: str, tmp_path: Path) -> Iterator[Callable[[str], Engine]]:
    """A factory of podmans, each with its own empty storage (`make_podman("pusher")`)."""
    yield from _engines(podman, podman_binary, tmp_path, "podman")


@pytest.fixture
def make_buildah(buildah_binary: str, tmp_path: Path) -> Iterator[Callable[[str], Engine]]:
    yield from _engines(buildah, buildah_binary, tmp_path, "buildah")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """When a test fails, show the tail of every registry log it used next to the failure."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name in ("cargobay", "distribution"):
            server = getattr(item, "funcargs", {}).get(name)
            if isinstance(server, RunningServer):
                report.sections.append((f"{name} log (tail)", server.log()[-6000:]))
