"""docs/architecture.md is the map of the code: every module it names exists, and every module of
the project's packages is named in it (as a path in backticks, e.g. `storage/driver/fs.py`, or a
package directory, e.g. `storage/driver/s3/`)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("ocispec", "storage", "registry", "distclient", "puller")
#: A path in backticks that starts with one of the packages: `pkg/…/name.py` or `pkg/…/dir/`.
NAMED = re.compile(r"`((?:{})(?:/[A-Za-z0-9_]+)*(?:\.py|/))`".format("|".join(PACKAGES)))


def named_paths() -> set[str]:
    return set(NAMED.findall(DOC.read_text()))


def project_modules() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_the_readme_links_the_architecture() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


def test_every_module_the_map_names_exists() -> None:
    missing = sorted(p for p in named_paths() if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names what is not there: {missing}"


def test_every_module_is_on_the_map() -> None:
    named = named_paths()
    assert named, "docs/architecture.md names no module"
    unnamed = sorted(project_modules() - named)
    assert not unnamed, f"docs/architecture.md does not name: {unnamed}"


def test_every_package_directory_is_on_the_map() -> None:
    named = named_paths()
    directories = {path.parent.relative_to(ROOT).as_posix() + "/" for package in PACKAGES
                   for path in (ROOT / package).rglob("__init__.py")}
    unnamed = sorted(directories - named)
    assert not unnamed, f"docs/architecture.md does not name the packages {unnamed}"
