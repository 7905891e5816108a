"""Suite-wide rules.

Under CARGOBAY_REQUIRE_TOOLS=1 (as `.ci/run` sets it) a skipped test is a failed run: a suite that
skipped its S3, browser or client tests must never pass as green. Each skip is named in the summary.
"""

from __future__ import annotations

import os

import pytest


def _require_everything() -> bool:
    return os.environ.get("CARGOBAY_REQUIRE_TOOLS") == "1"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
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
