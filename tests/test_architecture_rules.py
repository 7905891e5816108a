"""How modules may import each other, beyond the package direction of test_architecture.py:

- no import cycle between project modules (imports under `if TYPE_CHECKING:` are not run and do
  not count; every other import, also one inside a function, does);
- no module takes another module's private (`_`) names, neither `from m import _x` nor `m._x`;
- front doors: code outside a top-level package imports it only through its `__init__`
  (ocispec, the pure model, is a package of public modules).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ocispec", "storage", "registry", "distclient", "puller")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted (a package means its __init__)
    names: tuple[str, ...]  # what `from target import ...` takes (empty for `import target`)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
            if "__pycache__" not in p.parts}


MODULES = all_modules()


def is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str) -> list[Import]:
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    skipped = type_checking_lines(tree)
    package = name if is_package(name) else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, (), node.lineno) for alias in node.names
                      if alias.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in PACKAGES:
                continue
            plain = []
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:  # `from pkg import module`
                    found.append(Import(name, f"{target}.{alias.name}", (), node.lineno))
                else:
                    plain.append(alias.name)
            if plain:
                found.append(Import(name, target, tuple(plain), node.lineno))
    return found


IMPORTS = {name: imports_of(name) for name in MODULES}


def where(imp: Import) -> str:
    return f"{MODULES[imp.source].relative_to(ROOT)}:{imp.line}"


def test_no_import_cycle() -> None:
    graph = {name: {imp.target for imp in imports if imp.target in MODULES and imp.target != name}
             for name, imports in IMPORTS.items()}
    # A package's __init__ re-exporting its own modules is how front doors work; the modules inside
    # never import their own package's __init__ back (that is the cycle this finds).
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_takes_another_modules_private_names() -> None:
    bad = [f"{where(imp)} takes {n} from {imp.target}" for imports in IMPORTS.values() for imp in imports
           for n in imp.names if n.startswith("_") and not n.startswith("__")]
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {alias.asname or alias.name: imp.target for imp in IMPORTS[name] if not imp.names
                   for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias in node.names if node.lineno == imp.line}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


#: ocispec is the pure OCI model: value types and grammars with no internals, so each of its modules
#: is public (`from ocispec.digest import Digest`); docs/architecture.md says so.
ALL_MODULES_PUBLIC = {"ocispec"}


def front_door_exports(package: str) -> set[str]:
    """The names a package's `__init__` lists in `__all__`."""
    tree = ast.parse(MODULES[package].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return {elt.value for elt in getattr(node.value, "elts", []) if isinstance(elt, ast.Constant)}
    return set()


def test_packages_are_entered_through_their_front_door() -> None:
    """From outside a top-level package, only its `__init__` (and the modules that `__init__`
    itself exports by name, such as `storage.errors`) may be imported. Inside a package, its
    subpackages are its own business."""
    bad = []
    for imports in IMPORTS.values():
        for imp in imports:
            package = imp.target.split(".")[0]
            if package in ALL_MODULES_PUBLIC or imp.source.split(".")[0] == package or imp.target == package:
                continue
            first = imp.target.split(".")[1]
            if imp.target == f"{package}.{first}" and first in front_door_exports(package):
                continue
            bad.append(f"{where(imp)} imports {imp.target}: use the front door `{package}`")
    assert not bad, "\n".join(bad)


def test_every_package_has_a_front_door() -> None:
    for package in PACKAGES:
        if package not in ALL_MODULES_PUBLIC:
            assert front_door_exports(package), f"{package}/__init__.py exports nothing (__all__)"
