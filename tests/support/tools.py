"""External tools the tests drive (skopeo, podman, buildah, docker-registry, umoci...).

A test that needs a missing tool skips on a developer machine, but fails in CI, where
CARGOBAY_REQUIRE_TOOLS=1 says every tool must be there.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """The tool's path; skips (or fails under CARGOBAY_REQUIRE_TOOLS=1) when it is not installed."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed"
    if os.environ.get("CARGOBAY_REQUIRE_TOOLS") == "1":
        pytest.fail(message + " (CARGOBAY_REQUIRE_TOOLS=1)")
    pytest.skip(message)
