"""The puller imports only `ocispec`, the standard library and its HTTP client (DESIGN.md), and
only `cli` prints."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PULLER = Path(__file__).resolve().parents[2] / "puller"
ALLOWED_THIRD_PARTY = {"urllib3", "zstandard"}  # zstandard: zstd layers (unpack)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_puller_imports_only_ocispec_stdlib_and_http_client() -> None:
    for path in sorted(PULLER.glob("*.py")):
        for name in _imports(path):
            assert name in sys.stdlib_module_names or name in {"ocispec", *ALLOWED_THIRD_PARTY}, \
                f"{path.name} imports {name}"


def test_only_cli_prints() -> None:
    for path in sorted(PULLER.glob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                raise AssertionError(f"{path.name}:{node.lineno} prints")
