"""Find the job modules, import them, and build the job tree.

:func:`discover` does the three steps in turn: :func:`import_modules` imports
every module below ``modules_dir``, :func:`find_job_classes` picks the
subclasses of the root job class that those modules define, and
:func:`~flask_spacewalk.tree.build_tree` checks them and arranges them as a
:class:`~flask_spacewalk.tree.Tree`.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import Iterable, Iterator

from .base_job import BaseJob
from .errors import JobModuleImportError
from .runtime.job import RuntimeJob
from .tree import Tree, build_tree, check_root

__all__ = [
    "discover",
    "find_job_classes",
    "import_modules",
]

#: Modules that no ``sys.path`` entry can name are loaded below this prefix.
_PRIVATE_PREFIX = "_spacewalk_modules_"


# -- importing the job modules ----------------------------------------------


def import_modules(
    modules_dir: str | os.PathLike[str], root_path: str | None = None
) -> list[types.ModuleType]:
    """Import every job module below ``modules_dir``.

    ``modules_dir`` is a directory (absolute, or relative to ``root_path``,
    then to the working directory) when one exists there, else the dotted
    name of a package or module. Every ``*.py`` file below it is imported,
    in sorted path order (a package's ``__init__.py`` first), skipping
    hidden entries and ``__pycache__``. A module already imported from the
    same file is reused rather than imported again under another name.

    :param modules_dir: the directory or dotted name.
    :param root_path: the directory a relative ``modules_dir`` is looked up
        in first, usually the app's ``root_path``.
    :return: the modules, in import order.
    :raises JobModuleImportError: ``modules_dir`` names nothing, or a module
        fails to import.
    """
    # Job files may have been written since the finders cached a listing.
    importlib.invalidate_caches()
    text = os.fspath(modules_dir)
    candidates = _directory_candidates(text, root_path)
    directory = next((path for path in candidates if os.path.isdir(path)), None)
    if directory is not None:
        return _Importer().import_directory(os.path.realpath(directory))

    module = _import_by_name(text, candidates)
    paths = getattr(module, "__path__", None)
    if paths is None:
        return [module]
    modules = [module]
    importer = _Importer(package=module.__name__)
    for path in list(paths):
        for found in importer.import_directory(os.path.realpath(path)):
            if not any(found is known for known in modules):
                modules.append(found)
    return modules


def _directory_candidates(path: str, root_path: str | None) -> list[str]:
    if os.path.isabs(path):
        return [path]
    candidates = [os.path.join(root_path, path)] if root_path else []
    # The root path is often the working directory: try (and name) it once.
    candidates.append(os.path.abspath(path))
    return list(dict.fromkeys(os.path.normpath(c) for c in candidates))


def _import_by_name(name: str, tried: list[str]) -> types.ModuleType:
    not_found = JobModuleImportError(
        f"modules_dir {name!r} is neither a directory (looked for"
        f" {', '.join(tried)}) nor an importable module"
    )
    if not all(part.isidentifier() for part in name.split(".")):
        raise not_found
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as exc:
        # Only the name itself missing means "not found"; a module it
        # imports being missing is that module's failure.
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and f"{name}.".startswith(f"{missing}."):
            raise not_found from None
        raise JobModuleImportError(
            f"cannot import job package {name!r}: {_cause(exc, None)}"
        ) from exc


def _python_files(
    directory: str, parts: tuple[str, ...] = (), seen: set[str] | None = None
) -> Iterator[tuple[str, tuple[str, ...]]]:
    """``(real path, relative path parts)`` of the ``*.py`` files below."""
    seen = set() if seen is None else seen
    real = os.path.realpath(directory)
    if real in seen:  # a symlink loop, or a directory reached twice
        return
    seen.add(real)
    with os.scandir(directory) as scan:
        # The package's own module first, as the import system runs it first.
        entries = sorted(scan, key=lambda e: (e.name != "__init__.py", e.name))
    for entry in entries:
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            yield from _python_files(entry.path, (*parts, entry.name), seen)
        elif entry.name.endswith(".py") and entry.is_file():
            yield os.path.realpath(entry.path), (*parts, entry.name)


def _module_parts(parts: tuple[str, ...]) -> tuple[str, ...]:
    """The dotted-name parts of a relative file path: ``a/__init__.py`` -> ``a``."""
    last = parts[-1][: -len(".py")]
    return parts[:-1] if last == "__init__" else (*parts[:-1], last)


class _Importer:
    """Imports files by their real dotted name when there is one."""

    def __init__(self, package: str | None = None):
        self.package = package
        self._real: dict[str, str] = {}
        entries = {
            os.path.realpath(entry or os.curdir)
            for entry in sys.path
            if isinstance(entry, str)
        }
        # Deepest first: the name Python itself would give the file.
        self.search_paths = sorted(
            (entry for entry in entries if os.path.isdir(entry)), key=len, reverse=True
        )

    def realpath(self, path: str) -> str:
        real = self._real.get(path)
        if real is None:
            real = self._real[path] = os.path.realpath(path)
        return real

    def import_directory(self, directory: str) -> list[types.ModuleType]:
        files = list(_python_files(directory))
        return [self.import_file(path, parts, directory) for path, parts in files]

    def import_file(
        self, path: str, rel_parts: tuple[str, ...], directory: str
    ) -> types.ModuleType:
        module = self.loaded(path)
        if module is not None:
            return module
        parts = _module_parts(rel_parts)
        if not all(part.isidentifier() for part in parts):
            raise JobModuleImportError(
                f"cannot import job module {path}: {'.'.join(parts)!r}"
                " is not a valid module name"
            )
        try:
            for name in self.names(path, parts):
                if self.resolves_to(name, path):
                    return importlib.import_module(name)
            return self.import_private(path, parts, directory)
        except (Exception, SystemExit) as exc:
            raise JobModuleImportError(
                f"cannot import job module {path}: {_cause(exc, path)}"
            ) from exc

    def loaded(self, path: str) -> types.ModuleType | None:
        """The module already imported from ``path``, under any name."""
        for module in list(sys.modules.values()):
            if not isinstance(module, types.ModuleType):
                continue
            # vars(), not getattr(): a module __getattr__ may import things.
            file = vars(module).get("__file__")
            if isinstance(file, str) and self.realpath(file) == path:
                return module
        return None

    def names(self, path: str, parts: tuple[str, ...]) -> Iterator[str]:
        """Dotted names that may import ``path``, best first."""
        if self.package is not None:
            yield ".".join((self.package, *parts))
        for entry in self.search_paths:
            prefix = entry if entry.endswith(os.sep) else entry + os.sep
            if not path.startswith(prefix):
                continue
            name_parts = _module_parts(tuple(path[len(prefix) :].split(os.sep)))
            if name_parts and all(part.isidentifier() for part in name_parts):
                yield ".".join(name_parts)

    def resolves_to(self, name: str, path: str) -> bool:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            # A parent is a plain module, or is in sys.modules without a
            # spec: this name cannot import the file; a private name can.
            return False
        origin = spec.origin if spec is not None else None
        return origin is not None and self.realpath(origin) == path

    def import_private(
        self, path: str, parts: tuple[str, ...], directory: str
    ) -> types.ModuleType:
        """Load ``path`` under a package name private to ``directory``.

        The package's ``__path__`` is ``directory``, so the import system
        finds the files below it and relative imports between them work.
        """
        digest = hashlib.sha1(os.fsencode(directory)).hexdigest()[:12]
        package = f"{_PRIVATE_PREFIX}{digest}"
        if not parts:  # the directory's own __init__.py is the package
            return _exec_module(package, path, directory)
        if package not in sys.modules:
            spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
            spec.submodule_search_locations = [directory]
            sys.modules[package] = importlib.util.module_from_spec(spec)
        return importlib.import_module(".".join((package, *parts)))


def _exec_module(name: str, path: str, directory: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[directory]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _cause(exc: BaseException, path: str | None) -> str:
    """``Type: message``, and where a module body raised it."""
    cause = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):  # its message names the file and line
        return cause
    frame = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "<module>":
            frame = tb
        tb = tb.tb_next
    if frame is None:
        return cause
    filename = frame.tb_frame.f_code.co_filename
    if path is not None and os.path.realpath(filename) == path:
        return f"{cause} (line {frame.tb_lineno})"
    return f"{cause} ({filename}, line {frame.tb_lineno})"


# -- finding the job classes -------------------------------------------------


def find_job_classes(
    modules: Iterable[types.ModuleType], root: type | None = None
) -> list[type]:
    """The job classes that ``modules`` define, in definition order.

    :param modules: the modules :func:`import_modules` returned.
    :param root: with a root class, every subclass of it defined in
        ``modules`` or in the root's own module; without one (a standalone
        worker), every runnable job class defined in ``modules``: a runtime
        job with a ``JOB_TYPE`` that is not abstract and, for a
        :class:`~flask_spacewalk.BaseJob`, is a leaf.
    """
    names = {module.__name__ for module in modules}
    if root is not None:
        names.add(root.__module__)
        found = [cls for cls in _subclasses(root) if cls.__module__ in names]
    else:
        found = [
            cls
            for cls in _subclasses(RuntimeJob)
            if cls.__module__ in names and _is_runnable(cls)
        ]
    return _in_definition_order(found)


def _subclasses(root: type) -> list[type]:
    """Every subclass of ``root``, each once, parents before children."""
    found: list[type] = []
    seen: set[type] = set()
    stack: list[type] = list(reversed(root.__subclasses__()))
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        found.append(cls)
        stack.extend(reversed(cls.__subclasses__()))
    return found


def _is_runnable(cls: type) -> bool:
    if not issubclass(cls, RuntimeJob) or not cls.JOB_TYPE or inspect.isabstract(cls):
        return False
    return not issubclass(cls, BaseJob) or cls.is_leaf()


def _in_definition_order(classes: list[type]) -> list[type]:
    """Sort ``classes`` in the order they were created.

    A creation counter (``_definition_index`` in the class's own body, set
    by ``BaseJob.__init_subclass__``) is exact. Without one, modules count
    in the order they were first imported and classes in a module in the
    order their top-level names were bound, which only errs for classes
    created after their module imported another job module.
    """
    if all("_definition_index" in vars(cls) for cls in classes):
        return sorted(classes, key=lambda cls: vars(cls)["_definition_index"])
    module_order = {name: index for index, name in enumerate(sys.modules)}
    positions: dict[str, dict[str, int]] = {}

    def position(cls: type) -> tuple[int, int]:
        module_name = cls.__module__
        if module_name not in positions:
            module = sys.modules.get(module_name)
            bound = vars(module) if module is not None else {}
            positions[module_name] = {name: index for index, name in enumerate(bound)}
        top_name = cls.__qualname__.split(".", 1)[0]
        in_module = positions[module_name].get(top_name, len(positions[module_name]))
        return module_order.get(module_name, len(module_order)), in_module

    # sorted() is stable: classes that tie keep the subclass walk's order.
    return sorted(classes, key=position)


def discover(
    modules_dir: str | os.PathLike[str],
    root: type[BaseJob],
    url_prefix: str = "",
    root_path: str | None = None,
) -> Tree:
    """Import the job modules and build the tree of ``root``'s subclasses.

    :param modules_dir: see :func:`import_modules`.
    :param root: the root job class.
    :param url_prefix: see :func:`~flask_spacewalk.tree.build_tree`.
    :param root_path: see :func:`import_modules`.
    :raises ConfigurationError: ``root`` is not a :class:`BaseJob` subclass.
    :raises JobModuleImportError: a module could not be imported.
    :raises JobTreeError: the classes do not form a valid tree.
    """
    check_root(root)  # before importing anything
    modules = import_modules(modules_dir, root_path)
    return build_tree(root, find_job_classes(modules, root), url_prefix)
