"""Fixtures of the web console's browser tests: one chromium per test module (tests/support/browser.py)
pointed at the module's `server` fixture, skopeo, and the screenshots directory, which the run names
at its end.

Every test module defines `server` (one `registry serve` per module); the browser fixture follows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import Skopeo, client_env
from tests.support.browser import Browser, artifacts_dir, browsing, start_browser
from tests.support.servers import RunningServer
from tests.support.tools import require_tool

_WRITTEN: list[Path] = []


@pytest.fixture(scope="session")
def shots() -> Path:
    """The screenshots directory, emptied of an earlier run's pictures."""
    directory = artifacts_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    return directory


@pytest.fixture(scope="module")
def browser(server: RunningServer, shots: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    started = start_browser(tmp_path_factory.mktemp("chromium") / "profile", server.url, shots)
    try:
        yield from browsing(started)
    finally:
        _WRITTEN.extend(started.written)


@pytest.fixture(autouse=True)
def _no_unchecked_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test did last in the browser is checked too: no console error, no foreign request."""
    yield
    if "browser" in request.fixturenames:
        request.getfixturevalue("browser").drain_logs()


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    return Skopeo(require_tool("skopeo"), client_env(tmp_path_factory.mktemp("ui-skopeo-conf")))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _WRITTEN:
        terminalreporter.write_line(f"web console screenshots: {len(_WRITTEN)} in {artifacts_dir()}")
