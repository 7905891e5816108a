"""The puller imports only `ocispec`, the registry client `distclient`, the standard library and
zstandard (docs/architecture.md); `distclient` only `ocispec` and the standard library (its HTTP/1.1
is its own); and only puller's `cli` prints."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PULLER = ROOT / "puller"
DISTCLIENT = ROOT / "distclient"
ALLOWED_THIRD_PARTY = {"zstandard"}  # zstd layers (unpack)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_puller_imports_only_ocispec_distclient_stdlib_and_zstandard() -> None:
    for path in sorted(PULLER.rglob("*.py")):
        for name in _imports(path):
            assert name in sys.stdlib_module_names or name in {"ocispec", "distclient", *ALLOWED_THIRD_PARTY}, \
                f"{path.relative_to(ROOT)} imports {name}"


def test_distclient_imports_only_ocispec_and_stdlib() -> None:
    files = sorted(DISTCLIENT.rglob("*.py"))
    assert files
    for path in files:
        for name in _imports(path):
            assert name in sys.stdlib_module_names or name == "ocispec", \
                f"{path.relative_to(ROOT)} imports {name}"


def test_only_cli_prints() -> None:
    for path in sorted([*PULLER.rglob("*.py"), *DISTCLIENT.rglob("*.py")]):
        if path == PULLER / "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                raise AssertionError(f"{path.relative_to(ROOT)}:{node.lineno} prints")


def test_puller_reaches_distclient_only_through_its_front_door() -> None:
    """`from distclient import X` with X in `distclient.__all__`: never a submodule."""
    import distclient

    exported = set(distclient.__all__)
    assert all(hasattr(distclient, name) for name in exported), "distclient.__all__ names something it lacks"
    for path in sorted(PULLER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = path.relative_to(ROOT)
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "distclient" for a in node.names), f"{where}: import distclient"
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("distclient."), f"{where}: from {node.module} import …"
                if node.module == "distclient":
                    hidden = {alias.name for alias in node.names} - exported
                    assert not hidden, f"{where} imports {sorted(hidden)}, which distclient/__init__ does not export"
