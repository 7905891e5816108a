"""External tools the tests drive (skopeo, podman, buildah, docker-registry, umoci, weed...).

A test that needs a missing tool skips on a developer machine, but fails in CI, where
CARGOBAY_REQUIRE_TOOLS=1 says every tool must be there.

Tools the project installs itself (SeaweedFS's `weed` comes with the test extra) live next to the
interpreter running the tests, in the venv's `bin/`, which is not on PATH when the suite runs as
`.venv/bin/python -m pytest` without activating the venv: that directory is searched first.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def interpreter_bin() -> Path:
    """The directory of the running interpreter as invoked (a venv's `bin/`, symlinks not followed)."""
    return Path(sys.executable).parent


def find_tool(name: str) -> str | None:
    """The tool's path: beside the interpreter first, then on PATH."""
    beside = interpreter_bin() / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def require_tool(name: str) -> str:
    """The tool's path; skips (or fails under CARGOBAY_REQUIRE_TOOLS=1) when it is not installed."""
    path = find_tool(name)
    if path:
        return path
    message = f"{name} is not installed (looked in {interpreter_bin()} and on PATH)"
    if os.environ.get("CARGOBAY_REQUIRE_TOOLS") == "1":
        pytest.fail(message + " (CARGOBAY_REQUIRE_TOOLS=1)")
    pytest.skip(message)
