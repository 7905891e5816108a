"""docs/architecture.md's dependency direction, enforced with `ast`: ocispec imports no project
code; storage only ocispec (boto3 only in its s3 driver); distclient only ocispec; puller ocispec and
distclient; registry ocispec, storage and distclient. Cycles, private names and front doors:
test_architecture_rules.py; the map itself: test_architecture_doc.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"ocispec", "storage", "registry", "puller", "distclient"}
ALLOWED_PROJECT = {
    "ocispec": set(),
    "storage": {"ocispec"},
    "distclient": {"ocispec"},
    "puller": {"ocispec", "distclient"},
    "registry": {"ocispec", "storage", "distclient"},
}
FORBIDDEN_THIRD_PARTY = {
    "ocispec": {"starlette", "uvicorn", "anyio", "httpx", "requests", "urllib3", "boto3", "botocore", "yaml"},
    "storage": {"starlette", "uvicorn", "anyio", "httpx", "requests", "urllib3"},
    "distclient": {"starlette", "uvicorn", "anyio", "boto3", "botocore", "yaml"},
    "puller": {"starlette", "uvicorn", "anyio", "boto3", "botocore"},
    "registry": set(),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(PROJECT))
def test_dependency_direction(package: str) -> None:
    files = modules(package)
    assert files, f"{package} has no modules"
    for path in files:
        imports = imported_modules(path)
        wrong = (imports & PROJECT) - ALLOWED_PROJECT[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
        banned = imports & FORBIDDEN_THIRD_PARTY[package]
        assert not banned, f"{path.relative_to(ROOT)} imports {sorted(banned)}"
        if package == "storage" and not path.is_relative_to(ROOT / "storage" / "driver" / "s3"):
            assert not imports & {"boto3", "botocore"}, f"{path.relative_to(ROOT)}: boto3 belongs in the s3 driver"


def test_nothing_imports_registry_or_puller_outside_tests() -> None:
    for package in ("ocispec", "storage", "distclient"):
        for path in modules(package):
            assert not imported_modules(path) & {"registry", "puller"}, path


def test_modules_stay_small() -> None:
    for package in sorted(PROJECT):
        for path in modules(package):
            lines = len(path.read_text().splitlines())
            assert lines < 500, f"{path.relative_to(ROOT)} has {lines} lines: split it (docs/architecture.md)"


def test_registry_reaches_storage_only_through_its_front_door() -> None:
    """`registry` imports `storage` as `from storage import X` with X in `storage.__all__`: never a
    submodule (`storage.repository`, `storage.driver.fs`…), never `import storage` (which would
    allow `storage.anything`). What the registry may rely on is that one list."""
    import storage

    exported = set(storage.__all__)
    assert all(hasattr(storage, name) for name in exported), "storage.__all__ names something it lacks"
    for path in modules("registry"):
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] != "storage", f"{where}: `import {alias.name}`"
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("storage."), (
                    f"{where}: `from {node.module} import …` bypasses storage's front door")
                if node.module == "storage":
                    hidden = {alias.name for alias in node.names} - exported
                    assert not hidden, f"{where} imports {sorted(hidden)}, which storage/__init__ does not export"
            elif isinstance(node, ast.Attribute) and node.attr in _BEHIND_THE_VIEWS:
                # `ctx.storage.blobs.open(...)` would skip the repository's link check; the
                # settings section of the same name (`settings.storage.uploads`) is no Storage.
                owner = node.value
                if isinstance(owner, ast.Attribute) and owner.attr == "storage":
                    parent = owner.value
                    is_settings = (isinstance(parent, ast.Name) and parent.id == "settings") or (
                        isinstance(parent, ast.Attribute) and parent.attr == "settings")
                    assert is_settings, (f"{where}:{node.lineno}: `.storage.{node.attr}` bypasses the repository "
                                         "views (use repo.blobs / repo.uploads, Storage's methods)")


#: Storage's global stores and driver: the registry reaches blobs and uploads through a repository.
_BEHIND_THE_VIEWS = {"blobs", "uploads", "driver"}
