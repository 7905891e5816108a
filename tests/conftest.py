"""Suite-wide rules.

Under CARGOBAY_REQUIRE_TOOLS=1 (as `.ci/run` sets it) a skipped test is a failed run: a suite that
skipped its S3, browser or client tests must never pass as green. Each skip is named in the summary.

No secret the tests use reaches a log or audit line of any server the session started: the files
and secrets are remembered in tests/support/leaks.py and scanned when the session ends; a leak
fails the run and is named (file, line, kind of secret) in the summary, never shown.
"""

from __future__ import annotations

import os

import pytest

from tests.support import leaks

_LEAKS = pytest.StashKey[list[leaks.Leak]]()


def _require_everything() -> bool:
    return os.environ.get("CARGOBAY_REQUIRE_TOOLS") == "1"


def pytest_sessionstart(session: pytest.Session) -> None:
    leaks.watch_hashed_passwords()  # what the helpers put in htpasswd files are secrets to look for


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    found = terminalreporter.config.stash.get(_LEAKS, [])
    if found:
        terminalreporter.section("secrets in server logs or audit files", red=True)
        for line in leaks.report(found):
            terminalreporter.line(line)
    skipped = terminalreporter.stats.get("skipped", [])
    if _require_everything() and skipped:
        terminalreporter.section("skips are failures under CARGOBAY_REQUIRE_TOOLS=1", red=True)
        for report in skipped:
            terminalreporter.line(f"SKIPPED {report.nodeid}: {report.longrepr}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if _require_everything() and skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config.stash[_LEAKS] = found = leaks.SESSION.scan()
    if found and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
