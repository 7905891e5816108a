"""The README starts with the two commands a new user runs, and CI runs the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [block.strip() for block in blocks[:2]]


def test_first_two_commands_start_the_registry_and_run_the_tests() -> None:
    start, test = readme_commands()
    assert "registry serve" in start and "\n" not in start
    assert "pytest" in test and "\n" not in test


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()
    assert "CARGOBAY_REQUIRE_TOOLS=1" in ci
