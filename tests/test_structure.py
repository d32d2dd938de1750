"""The package's shape: faces call the front door only, layers hold, no import cycle, commands documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click

from newsletter.cli import cli

from .conftest import ROOT

PACKAGE = ROOT / "newsletter"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every newsletter module `path` imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("newsletter"))
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if not target.startswith("newsletter"):
                continue
            for alias in node.names:  # `from . import x` imports the module x
                sub = f"{target}.{alias.name}"
                found.add(sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                          or (ROOT / Path(*sub.split("."))).is_dir() else target)
    return found - {name}


MODULES = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def face_of(module: str) -> str | None:
    """The face (`newsletter.cli` or `newsletter.web`) a module belongs to, if any."""
    for face in ("newsletter.cli", "newsletter.web"):
        if module == face or module.startswith(face + "."):
            return face
    return None


FACES = {m for m in MODULES if face_of(m)}


def test_faces_import_the_front_door_and_errors_only():
    allowed = {"newsletter", "newsletter.app", "newsletter.errors"}
    for face in FACES:
        inside = {m for m in MODULES[face] if face_of(m) == face_of(face)}
        assert MODULES[face] - inside <= allowed, f"{face} imports {sorted(MODULES[face] - inside - allowed)}"


def test_faces_are_imported_by_nothing():
    for module, found in MODULES.items():
        if module in FACES:
            continue
        assert not found & FACES, f"{module} imports the face {sorted(found & FACES)}"


def test_no_import_cycle():
    # Edges between modules; a package's __init__ importing its own submodules is how packages work.
    graph = {m: {t for t in found if t in MODULES and not (m.endswith(t.rpartition('.')[0]) and t.startswith(m + "."))}
             for m, found in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_layers():
    def reaches(module: str) -> set[str]:
        seen, todo = set(), [module]
        while todo:
            for nxt in MODULES.get(todo.pop(), set()):
                if nxt in MODULES and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    storage = {"newsletter.store", "newsletter.sql", "newsletter.locks", "newsletter.schema", "newsletter.ledger",
               "newsletter.events", "newsletter.csvio"}
    for module in ("newsletter.render", "newsletter.content", "newsletter.plaintext"):
        assert not reaches(module) & storage, f"{module} reaches the store"
    for module in [m for m in MODULES if m.startswith("newsletter.providers")]:
        assert not reaches(module) & (storage | {"newsletter.send"}), f"{module} reaches the store or the ledger"
    # `send` is the one place below the front door that joins a provider with the ledger.
    joiners = {m for m in MODULES if "newsletter.ledger" in MODULES[m]
               and any(t.startswith("newsletter.providers") for t in MODULES[m])}
    assert {m for m in joiners if not m.startswith("newsletter.app.")} <= {"newsletter.send"}, joiners


def test_every_cli_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()

    def commands(group: click.Group, prefix: str) -> list[str]:
        found = []
        for name, command in group.commands.items():
            if command.hidden:
                continue
            if isinstance(command, click.Group):
                found.extend(commands(command, f"{prefix} {name}"))
            found.append(f"{prefix} {name}")
        return found

    missing = [c for c in commands(cli, "newsletter") if c not in readme]
    assert not missing, f"not in the README: {missing}"


def test_every_public_name_of_every_module_exists():
    """`from newsletter.x import *` works: each `__all__` names only what the module defines at run time."""
    import importlib

    for path in sorted(PACKAGE.rglob("*.py")):
        module = importlib.import_module(module_name(path))
        missing = [name for name in getattr(module, "__all__", []) if not hasattr(module, name)]
        assert not missing, f"{module.__name__}.__all__ names {missing}, which it does not define"


def design_rows() -> list[list[str]]:
    """The modules of each row of the README's Design table, in order (a package as `name/`)."""
    lines = (ROOT / "README.md").read_text().split("\n## Design\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| `"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [re.findall(r"`([a-z_/]+)`", row.split("|")[1]) for row in lines[start:end]]


def layer_of(module: str, rows: list[list[str]]) -> int | None:
    name = module.removeprefix("newsletter.")
    for index, names in enumerate(rows):
        for entry in names:
            if name == entry or (entry.endswith("/") and (name + ".").startswith(entry.replace("/", "."))):
                return index
    return None


def test_the_design_table_is_the_layering():
    """Each module is in the README's Design table, and imports only modules of its own row or the rows above."""
    rows = design_rows()
    assert rows, "no Design table in the README"
    for module, found in MODULES.items():
        if module == "newsletter":
            continue
        layer = layer_of(module, rows)
        assert layer is not None, f"{module} is missing from the README's Design table"
        for target in found & set(MODULES):
            if target == "newsletter" or target.startswith(module + "."):
                continue
            other = layer_of(target, rows)
            assert other is not None and other <= layer, (
                f"{module} (row {layer + 1} of the Design table) imports {target} (row {other}): move the rows, or "
                f"the import")


def test_the_front_door_holds_the_config_the_store_the_provider_and_its_parts(cfg):
    """`Newsletter` stays small: each operation lives on the part of its domain (`nl.sends.send`, …), and the
    parts open nothing until asked."""
    from newsletter import Newsletter
    from newsletter.app.part import Part

    tree = ast.parse((PACKAGE / "app" / "__init__.py").read_text())
    door = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Newsletter")
    assert door.end_lineno is not None and door.end_lineno - door.lineno < 200
    methods = {n.name for n in door.body if isinstance(n, ast.FunctionDef)}
    assert methods <= {"__init__", "from_config", "store", "provider", "healthy", "explain", "close", "__enter__",
                       "__exit__"}, methods
    nl = Newsletter(cfg)
    parts = {name for name, value in vars(nl).items() if isinstance(value, Part)}
    assert parts == {"issues", "subscribers", "sends", "schedule", "links", "webhooks", "bounces", "welcome",
                     "monitoring", "alerts"}
    assert nl._store is None  # making the parts opened no database


# Memoised pure functions of the package's own constants: a process may share them.
PURE_CACHES = {"newsletter.compat._data", "newsletter.addresses._domain"}


def test_no_module_keeps_state_that_changes():
    """Module-level tables are read-only (tuples, MappingProxyType) and the only caches are memoised pure
    functions: whatever a Newsletter learns (templates, archive pages, receivers) it keeps itself."""
    mutable = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
    makers = {"dict", "list", "set", "defaultdict", "deque", "OrderedDict", "Counter", "WeakValueDictionary"}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if not isinstance(target, ast.Name) or target.id == "__all__":
                    continue
                value = node.value
                called = isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", ""))
                assert not isinstance(value, mutable) and called not in makers, (
                    f"{name}.{target.id} (line {node.lineno}) is a mutable module-level table")
            if isinstance(node, ast.FunctionDef):
                cached = [d for d in node.decorator_list if "cache" in ast.unparse(d)]
                assert not cached or f"{name}.{node.name}" in PURE_CACHES, (
                    f"{name}.{node.name} is cached by the process")
