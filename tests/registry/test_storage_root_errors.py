"""A filesystem root no call could use stops `registry serve` and `registry gc` at once, with one
line naming the root and what is wrong with it: no traceback, no server left half started."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT, free_port


def _registry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "registry", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60, stdin=subprocess.DEVNULL)


def _symlink_loop(tmp_path: Path) -> Path:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    return loop / "data"


def _too_long(tmp_path: Path) -> Path:
    return tmp_path / ("r" * 300) / "data"  # a component longer than any file name Linux allows


@pytest.mark.parametrize("command", ["serve", "gc"])
@pytest.mark.parametrize(("make_root", "reason"), [(_symlink_loop, "Too many levels of symbolic links"),
                                                   (_too_long, "File name too long")], ids=["symlink-loop", "too-long"])
def test_an_unusable_root_is_one_line(tmp_path: Path, command: str, make_root: Callable[[Path], Path],
                                  reason: str) -> None:
    root = make_root(tmp_path)
    extra = ["--port", str(free_port())] if command == "serve" else []
    result = _registry(command, "--root", str(root), *extra)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.splitlines() == [f"registry: storage root {root} cannot be used: {reason}"]
