"""The suite's own rules: tools the project installs are found without an activated venv, and a
skip fails the run where every tool is required (as in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tools import find_tool, interpreter_bin

ROOT = Path(__file__).resolve().parents[1]


def test_tools_the_test_extra_installs_are_found_beside_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    # `pip install -e '.[test]'` puts SeaweedFS's `weed` in the venv's bin/, which is not on PATH
    # when the suite runs as `.venv/bin/python -m pytest`.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert find_tool("weed") == str(interpreter_bin() / "weed")


def run_suite_on(tmp_path: Path, source: str, require: bool) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_sample.py"
    test_file.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CARGOBAY_REQUIRE_TOOLS"}
    if require:
        env["CARGOBAY_REQUIRE_TOOLS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(test_file)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


SKIPPING = """
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("the browser is not installed")
"""


def test_a_skip_fails_the_run_when_every_tool_is_required(tmp_path: Path) -> None:
    run = run_suite_on(tmp_path, SKIPPING, require=True)
    assert run.returncode == 1, run.stdout
    assert "test_sample.py::test_skips" in run.stdout and "the browser is not installed" in run.stdout


def test_a_skip_is_only_a_skip_on_a_developer_machine(tmp_path: Path) -> None:
    run = run_suite_on(tmp_path, SKIPPING, require=False)
    assert run.returncode == 0, run.stdout
    assert "1 passed, 1 skipped" in run.stdout


def test_ci_runs_the_type_check_and_the_lint_after_the_tests() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    pytest_line = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert any(line.strip() == ".venv/bin/mypy" for line in lines[pytest_line:])
    assert any(line.strip().startswith(".venv/bin/ruff check") for line in lines[pytest_line:])
