"""The package's shape, read from its source (issue 13, docs/architecture.rst).

The import graph is computed with :mod:`ast`: every ``import`` of a module
of the package, at module level or inside a function (a lazy import that
dodges a cycle is still a cycle), except those under ``if TYPE_CHECKING:``,
which never run. On that graph no module imports another in a loop, no
folder (``runtime/``, ``backends/``, ``web/``) does either, and ``runtime/``
and ``backends/`` never reach Flask, werkzeug, click or the web layer.
"""
from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import flask_spacewalk

PACKAGE = flask_spacewalk.__name__
SOURCE = Path(flask_spacewalk.__file__).resolve().parent
#: What the layers below the web may not import, at any depth.
WEB_LIBRARIES = frozenset({"flask", "werkzeug", "click"})
#: The web layer (below the package), and the layers that never import it.
WEB_MODULES = ("web", "extension", "cli")
LOWER_LAYERS = ("runtime", "backends")

#: Edges between folders left out of the folder-cycle check: none.
EXPECTED_FOLDER_EDGES: frozenset[tuple[str, str]] = frozenset()
#: Module names allowed in two folders: none.
EXPECTED_NAME_CLASHES: frozenset[str] = frozenset()


# -- reading the graph ------------------------------------------------------------


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module below ``root`` by dotted name; a package is its ``__init__``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: Iterable[ast.AST]) -> Iterable[ast.AST]:
    """Every node under ``body`` that runs, ``if TYPE_CHECKING:`` bodies left out."""
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.orelse)
            continue
        yield node
        yield from _statements(ast.iter_child_nodes(node))


def imports(name: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The dotted names the module ``name`` at ``path`` imports.

    A ``from X import y`` names the module ``X.y`` when there is one, else
    ``X``; relative imports are made absolute.
    """
    is_package = path.name == "__init__.py"
    found = set()
    for node in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path)).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                # a package's own level 1 is itself; a module's, its package
                base_parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of the package and every name it imports (its own and others')."""
    known = modules(root, package)
    return {name: imports(name, path, known) for name, path in known.items()}


def internal(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` with only the edges between its own modules."""
    return {name: {t for t in targets if t in graph and t != name}
            for name, targets in graph.items()}


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` (``[a, b, ..., a]``), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        # graphlib lists it from the end: make it read as "a imports b"
        return list(reversed(exc.args[1]))
    return None


def folder(name: str, package: str) -> str:
    """The node of ``name`` in the folder graph: its subpackage, or itself."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == package:
        return ".".join(parts[:2])
    return name


def folder_graph(
    graph: Mapping[str, set[str]], package: str, ignored: Iterable[tuple[str, str]] = ()
) -> dict[str, set[str]]:
    """``graph`` with each subpackage one node, without the ``ignored`` edges."""
    skip = set(ignored)
    folders: dict[str, set[str]] = {}
    for name, targets in internal(graph).items():
        node = folder(name, package)
        edges = folders.setdefault(node, set())
        edges.update(folder(t, package) for t in targets
                     if (name, t) not in skip and folder(t, package) != node)
    return folders


def reachable(graph: Mapping[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports at any depth, with the path that leads to it."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        current = todo.pop()
        for target in sorted(graph.get(current, ())):
            if target not in paths:
                paths[target] = [*paths[current], target]
                todo.append(target)
    return paths


def _under(name: str, package: str, children: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``package``'s ``children`` or below one."""
    return any(name == f"{package}.{child}" or name.startswith(f"{package}.{child}.")
               for child in children)


def web_reaches(graph: Mapping[str, set[str]], package: str) -> list[str]:
    """``a -> b -> ... -> flask``: each way a module of a lower layer reaches
    Flask, werkzeug, click or a web module."""
    edges = internal(graph)
    found = []
    for name in sorted(graph):
        if not _under(name, package, LOWER_LAYERS):
            continue
        for target, path in sorted(reachable(edges, name).items()):
            libraries = sorted(
                lib for lib in graph[target] if lib.split(".")[0] in WEB_LIBRARIES
            )
            if _under(target, package, WEB_MODULES):
                found.append(" -> ".join(path))
            elif libraries:
                found.append(" -> ".join([*path, libraries[0]]))
    return found


def name_clashes(root: Path) -> dict[str, list[str]]:
    """Module and folder names used more than once below ``root``."""
    seen: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or path.name == "__init__.py":
            continue
        if path.suffix == ".py":
            seen.setdefault(path.stem, []).append(str(path.relative_to(root)))
        elif path.is_dir() and (path / "__init__.py").exists():
            seen.setdefault(path.name, []).append(f"{path.relative_to(root)}/")
    return {name: paths for name, paths in seen.items() if len(paths) > 1}


def class_clashes(root: Path) -> dict[str, list[str]]:
    """Public module-level class names defined in more than one module below
    ``root`` (nested classes, such as marshmallow's ``Meta``, are local)."""
    seen: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                seen.setdefault(node.name, []).append(str(path.relative_to(root)))
    return {name: paths for name, paths in seen.items() if len(set(paths)) > 1}


# -- the package ------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(SOURCE, PACKAGE)


def test_no_module_imports_another_in_a_loop(graph: dict[str, set[str]]) -> None:
    cycle = find_cycle(internal(graph))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_no_folder_imports_another_in_a_loop(graph: dict[str, set[str]]) -> None:
    cycle = find_cycle(folder_graph(graph, PACKAGE, EXPECTED_FOLDER_EDGES))
    assert cycle is None, "import cycle between folders: " + " -> ".join(cycle or ())


def test_runtime_and_backends_never_reach_the_web(graph: dict[str, set[str]]) -> None:
    assert web_reaches(graph, PACKAGE) == []


def test_no_two_modules_share_a_name() -> None:
    clashes = name_clashes(SOURCE)
    assert set(clashes) <= EXPECTED_NAME_CLASHES, clashes


def test_no_two_public_classes_share_a_name() -> None:
    # one meaning per word: the HTTP error body and a job's error record
    # were both ErrorSchema
    assert class_clashes(SOURCE) == {}


def test_the_web_layer_is_a_folder_of_its_own(graph: dict[str, set[str]]) -> None:
    # the per-app state, the HTTP helpers and the routes each in one module
    for name in ("state", "http", "routes", "views", "listing", "openapi", "docs", "console",
                 "csrf"):
        assert f"{PACKAGE}.web.{name}" in graph
    # and only the extension and the CLI, above it, import it
    users = {name for name, targets in internal(graph).items()
             if folder(name, PACKAGE) != f"{PACKAGE}.web"
             and any(t.startswith(f"{PACKAGE}.web") for t in targets)}
    assert users == {f"{PACKAGE}.extension", f"{PACKAGE}.cli"}


# -- the checks themselves, on small made-up packages --------------------------------


def write_package(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_the_graph_reads_every_kind_of_import(tmp_path: Path) -> None:
    source = write_package(tmp_path, {
        "__init__.py": "from .a import A\n",
        "a.py": "import json\nfrom . import b\nfrom .sub import c\n",
        "b.py": "from .sub.c import C\nimport pkg.sub\n",
        "sub/__init__.py": "from .. import b\nfrom ..a import A\n",
        "sub/c.py": (
            "from typing import TYPE_CHECKING\n"
            "import typing\n"
            "if TYPE_CHECKING:\n    from ..a import A\n"
            "if typing.TYPE_CHECKING:\n    from .. import b\nelse:\n    import flask\n"
            "def lazy():\n    from . import d\n"
        ),
        "sub/d.py": "",
    })
    graph = import_graph(source, "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"json", "pkg.b", "pkg.sub.c"},
        "pkg.b": {"pkg.sub.c", "pkg.sub"},
        "pkg.sub": {"pkg.b", "pkg.a"},
        "pkg.sub.c": {"typing", "flask", "pkg.sub.d"},
        "pkg.sub.d": set(),
    }


def test_a_cycle_is_found_and_shown_in_import_order() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 4
    for source, target in zip(cycle, cycle[1:]):
        assert target in {"a": {"b"}, "b": {"c"}, "c": {"a"}}[source]


def test_a_lazy_import_still_makes_a_cycle(tmp_path: Path) -> None:
    source = write_package(tmp_path, {
        "__init__.py": "",
        "views.py": "from . import listing\n",
        "listing.py": "def view():\n    from .views import json_response\n",
    })
    assert find_cycle(internal(import_graph(source, "pkg"))) is not None


def test_folders_in_a_loop_are_found_and_marked_edges_left_out(tmp_path: Path) -> None:
    source = write_package(tmp_path, {
        "__init__.py": "",
        "runtime/__init__.py": "",
        "runtime/stale.py": "from ..backends.base import JobQuery\n",
        "runtime/protocols.py": "",
        "backends/__init__.py": "",
        "backends/base.py": "from ..runtime.protocols import Value\n",
    })
    graph = import_graph(source, "pkg")
    assert find_cycle(internal(graph)) is None  # no module loop
    assert find_cycle(folder_graph(graph, "pkg")) is not None
    marked = {("pkg.runtime.stale", "pkg.backends.base")}
    assert find_cycle(folder_graph(graph, "pkg", marked)) is None


def test_a_lower_layer_reaching_flask_is_found_at_any_depth(tmp_path: Path) -> None:
    source = write_package(tmp_path, {
        "__init__.py": "",
        "helpers.py": "from werkzeug.exceptions import NotFound\n",
        "settings.py": "from . import helpers\n",
        "extension.py": "",
        "runtime/__init__.py": "",
        "runtime/worker.py": "def f():\n    from ..settings import X\n",
        "backends/__init__.py": "from .. import extension\n",
        "backends/sqlite.py": "import sqlite3\n",
    })
    assert web_reaches(import_graph(source, "pkg"), "pkg") == [
        "pkg.backends -> pkg.extension",
        "pkg.runtime.worker -> pkg.settings -> pkg.helpers -> werkzeug.exceptions",
    ]


def test_names_used_twice_are_found(tmp_path: Path) -> None:
    source = write_package(tmp_path, {
        "__init__.py": "", "worker.py": "", "jobs.py": "",
        "runtime/__init__.py": "", "runtime/worker.py": "", "runtime/job.py": "",
        "web/__init__.py": "", "web/runtime.py": "",
    })
    assert name_clashes(source) == {
        "worker": ["runtime/worker.py", "worker.py"],
        "runtime": ["runtime/", "web/runtime.py"],
    }


def test_classes_named_alike_are_found(tmp_path: Path) -> None:
    source = write_package(tmp_path, {
        "__init__.py": "",
        "openapi.py": "class ErrorSchema:\n    class Meta: pass\nclass _Private: pass\n",
        "runtime/__init__.py": "",
        "runtime/records.py": "class ErrorSchema: pass\nclass _Private: pass\n",
        "runtime/job.py": "class Meta: pass\nclass Job:\n    class Meta: pass\n",
    })
    assert class_clashes(source) == {"ErrorSchema": ["openapi.py", "runtime/records.py"]}
