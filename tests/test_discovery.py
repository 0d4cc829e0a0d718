"""Tests of flask_spacewalk.discovery: importing job modules, the job tree."""
from __future__ import annotations

import gc
import importlib
import pickle
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from flask_spacewalk import BaseJob
from flask_spacewalk.discovery import (
    discover,
    find_job_classes,
    import_modules,
)
from flask_spacewalk.errors import (
    ConfigurationError,
    JobModuleImportError,
    JobTreeError,
)
from flask_spacewalk.runtime.registry import JobRegistry
from flask_spacewalk.tree import RESERVED_NAMES, Branch, Leaf, build_tree

JOBTREES = Path(__file__).resolve().parent / "jobtrees"
PRIVATE = "_spacewalk_modules_"

Copy = Callable[..., Path]


@pytest.fixture(autouse=True)
def forget_job_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Drop the modules a test imported from its job trees."""
    before = set(sys.modules)
    base = str(tmp_path_factory.getbasetemp())
    yield
    # Decide before deleting: a namespace __path__ looks up its parent.
    ours = []
    for name in set(sys.modules) - before:
        module = sys.modules[name]
        places = [getattr(module, "__file__", None) or ""]
        places += list(getattr(module, "__path__", None) or ())
        if name.startswith(PRIVATE) or any(p.startswith(base) for p in places):
            ours.append(name)
    for name in ours:
        del sys.modules[name]
    # Dead job classes linger in __subclasses__() until collected.
    gc.collect()


@pytest.fixture
def copy_tree(tmp_path: Path) -> Copy:
    """Copy ``tests/jobtrees/<name>`` to ``<tmp_path>/<dest or name>``."""

    def copy(name: str, dest: str | Path | None = None) -> Path:
        target = tmp_path / (dest or name)
        shutil.copytree(JOBTREES / name, target)
        return target

    return copy


def relative_names(modules: list) -> list[str]:
    """Module names below the private package, "" for the package."""
    names = []
    for module in modules:
        assert module.__name__.startswith(PRIVATE)
        names.append(module.__name__.partition(".")[2])
    return names


def qualnames(classes: list) -> list[str]:
    return [cls.__qualname__ for cls in classes]


# -- import_modules ----------------------------------------------------------


def test_imports_every_file_in_sorted_order(copy_tree: Copy) -> None:
    deep = copy_tree("deep")
    # Sorts before __init__.py by name, but a package's own module comes first.
    (deep / "A_upper.py").write_text("VALUE = 1\n")
    modules = import_modules(deep)
    assert relative_names(modules) == [
        "",
        "A_upper",
        "alpha",
        "beta",
        "beta.jobs",
        "beta.sub.gamma",
        "empty",
    ]


def test_skips_hidden_entries_and_pycache(copy_tree: Copy) -> None:
    deep = copy_tree("deep")
    boom = 'raise RuntimeError("must not be imported")\n'
    (deep / ".hidden.py").write_text(boom)
    (deep / ".hidden_dir").mkdir()
    (deep / ".hidden_dir" / "boom.py").write_text(boom)
    (deep / "__pycache__").mkdir()
    (deep / "__pycache__" / "boom.py").write_text(boom)
    (deep / "notes.txt").write_text(boom)
    modules = import_modules(deep)
    assert len(modules) == 6


def test_private_names_and_relative_imports(copy_tree: Copy) -> None:
    deep = copy_tree("deep")
    modules = import_modules(deep)
    package, alpha = modules[0], modules[1]
    assert package.__name__.startswith(PRIVATE)
    assert package.__path__ == [str(deep.resolve())]
    # alpha.py imports the package relatively: one DeepRoot, not two.
    assert alpha.Alpha.__mro__[1] is package.DeepRoot
    # Imported once: a second call finds the same modules.
    assert all(a is b for a, b in zip(import_modules(deep), modules))


def test_private_names_differ_per_directory(copy_tree: Copy) -> None:
    first = import_modules(copy_tree("deep", "one"))[0]
    second = import_modules(copy_tree("deep", "two"))[0]
    assert first.__name__ != second.__name__
    assert first.DeepRoot is not second.DeepRoot


def test_directory_without_init(copy_tree: Copy) -> None:
    flat = copy_tree("flat")
    modules = import_modules(flat)
    assert relative_names(modules) == ["leaves", "nested.more", "root"]
    tree = discover(flat, modules[2].FlatRoot)
    assert [leaf.path for leaf in tree.leaves()] == ["/flat/top", "/flat/more"]


def test_real_dotted_name_is_used_and_reused(
    copy_tree: Copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_tree("deep", "site/deep_real")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    alpha = importlib.import_module("deep_real.alpha")
    modules = import_modules(tmp_path / "site" / "deep_real")
    assert [m.__name__ for m in modules] == [
        "deep_real",
        "deep_real.alpha",
        "deep_real.beta",
        "deep_real.beta.jobs",
        "deep_real.beta.sub.gamma",
        "deep_real.empty",
    ]
    assert modules[1] is alpha
    assert modules[0] is sys.modules["deep_real"]


def test_module_imported_under_another_name_is_reused(
    copy_tree: Copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = copy_tree("worker", "site/wpkg")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plain = importlib.import_module("wpkg.plain")
    monkeypatch.syspath_prepend(str(worker))
    modules = import_modules(worker)
    # The deepest entry names tree.py "tree"; plain.py is already imported.
    assert [m.__name__ for m in modules] == ["wpkg.plain", "tree"]
    assert modules[0] is plain


def test_name_must_resolve_to_the_file(
    copy_tree: Copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = copy_tree("worker", "site/wpkg")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(worker))
    # Another plain.py earlier on sys.path takes the top-level name.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "plain.py").write_text("OTHER = True\n")
    monkeypatch.syspath_prepend(str(tmp_path / "other"))
    modules = import_modules(worker)
    assert [m.__name__ for m in modules] == ["wpkg.plain", "tree"]
    assert not hasattr(modules[0], "OTHER")


def test_dotted_package(
    copy_tree: Copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_tree("deep", "site/deep_pkg")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)  # no "deep_pkg" directory here
    modules = import_modules("deep_pkg")
    assert [m.__name__ for m in modules] == [
        "deep_pkg",
        "deep_pkg.alpha",
        "deep_pkg.beta",
        "deep_pkg.beta.jobs",
        "deep_pkg.beta.sub.gamma",
        "deep_pkg.empty",
    ]
    tree = discover("deep_pkg", modules[0].DeepRoot)
    assert tree.find("/deep/beta/gamma/g1") is not None


def test_dotted_module(
    copy_tree: Copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(copy_tree("outside")))
    monkeypatch.chdir(tmp_path)
    assert import_modules("outside_root") == [sys.modules["outside_root"]]


def test_relative_directory_from_root_path_then_cwd(
    copy_tree: Copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_tree("flat", "app/jobs")
    copy_tree("worker", "cwd/jobs")
    monkeypatch.chdir(tmp_path / "cwd")
    from_root = import_modules("jobs", root_path=str(tmp_path / "app"))
    assert relative_names(from_root) == ["leaves", "nested.more", "root"]
    from_cwd = import_modules("jobs", root_path=str(tmp_path / "elsewhere"))
    assert relative_names(from_cwd) == ["plain", "tree"]
    assert relative_names(import_modules(Path("jobs"))) == ["plain", "tree"]


@pytest.mark.parametrize("name", ["no_such_jobs_pkg", "no_such/dir", "no_such.sub"])
def test_neither_directory_nor_module(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JobModuleImportError) as info:
        import_modules(name, root_path=str(tmp_path / "app"))
    message = str(info.value)
    assert "neither a directory" in message
    assert "nor an importable module" in message
    assert str(tmp_path / "app" / name) in message
    assert str(tmp_path / name) in message


def test_module_raising_at_import(copy_tree: Copy) -> None:
    boom = copy_tree("broken_raises") / "boom.py"
    with pytest.raises(JobModuleImportError) as info:
        import_modules(boom.parent)
    assert str(info.value) == (
        f"cannot import job module {boom.resolve()}:"
        " ValueError: boom at import (line 4)"
    )
    assert isinstance(info.value.__cause__, ValueError)
    assert isinstance(info.value, ConfigurationError)


def test_module_with_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "fine.py").write_text("VALUE = 1\n")
    (tmp_path / "bad.py").write_text('"""Line 1."""\n\ndef broken(:\n    pass\n')
    with pytest.raises(JobModuleImportError) as info:
        import_modules(tmp_path)
    message = str(info.value)
    assert message.startswith(
        f"cannot import job module {tmp_path.resolve() / 'bad.py'}:"
    )
    assert "SyntaxError:" in message
    assert "line 3" in message


def test_module_exiting_at_import(copy_tree: Copy) -> None:
    exits = copy_tree("broken_exit") / "exits.py"
    with pytest.raises(
        JobModuleImportError, match=r"exits\.py: SystemExit: 3 \(line 3\)"
    ):
        import_modules(exits.parent)


def test_error_raised_in_an_imported_file(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text("\nx = 1 / 0\n")
    with pytest.raises(JobModuleImportError) as info:
        import_modules(tmp_path)
    assert str(info.value) == (
        f"cannot import job module {tmp_path.resolve() / 'a.py'}: ZeroDivisionError:"
        f" division by zero ({tmp_path.resolve() / 'b.py'}, line 2)"
    )


def test_missing_dependency(tmp_path: Path) -> None:
    (tmp_path / "needs.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(
        JobModuleImportError,
        match=r"needs\.py: ModuleNotFoundError: No module named 'no_such_dependency",
    ):
        import_modules(tmp_path)


def test_package_raising_at_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "badpkg").mkdir()
    (tmp_path / "badpkg" / "__init__.py").write_text("raise KeyError('nope')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path / "badpkg")
    with pytest.raises(JobModuleImportError) as info:
        import_modules("badpkg")
    assert str(info.value).startswith(
        "cannot import job package 'badpkg': KeyError: 'nope'"
    )
    assert "__init__.py, line 1)" in str(info.value)


def test_file_name_that_is_not_a_module_name(copy_tree: Copy) -> None:
    with pytest.raises(
        JobModuleImportError, match="'my-job' is not a valid module name"
    ):
        import_modules(copy_tree("broken_badname"))


# -- find_job_classes --------------------------------------------------------

DEEP_CLASSES = [
    "Timed",
    "Status",
    "Alpha",
    "AlphaBase",
    "FizzBuzz",
    "Echo",
    "Bang",
    "Inner",
    "Deepest",
    "Timely",
    "Beta",
    "One",
    "Two",
    "Gamma",
    "G1",
    "Empty",
]


def test_job_classes_in_definition_order(copy_tree: Copy) -> None:
    modules = import_modules(copy_tree("deep"))
    found = find_job_classes(modules, modules[0].DeepRoot)
    assert qualnames(found) == DEEP_CLASSES


def test_job_classes_outside_modules_dir_are_ignored(
    copy_tree: Copy, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = copy_tree("outside")
    monkeypatch.syspath_prepend(str(outside))
    root = importlib.import_module("outside_root").OutsideRoot
    importlib.import_module("outside_extra")
    modules = import_modules(outside / "outside_jobs")
    # The root's own module counts; outside_extra does not.
    assert qualnames(find_job_classes(modules, root)) == ["Native", "Visitor"]
    tree = discover(outside / "outside_jobs", root)
    assert [leaf.path for leaf in tree.leaves()] == [
        "/outside/native",
        "/outside/visitor",
    ]


def test_branch_outside_modules_dir(
    copy_tree: Copy, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = copy_tree("outside")
    monkeypatch.syspath_prepend(str(outside))
    root = importlib.import_module("outside_root").OutsideRoot
    with pytest.raises(JobTreeError) as info:
        discover(outside / "stray_jobs", root)
    assert info.value.problems == [
        (
            "stray_jobs.stray.Stray hangs under the branch outside_extra.ExtraBranch,"
            " which is not in the tree (define it below modules_dir or in the root"
            " class's module)"
        )
    ]


def test_runnable_job_classes_for_the_worker(copy_tree: Copy) -> None:
    found = find_job_classes(import_modules(copy_tree("worker")))
    assert qualnames(found) == ["PlainJob", "WLeaf"]
    assert [cls.JOB_TYPE for cls in found] == ["plain", "b_leaf"]

    deep = find_job_classes(import_modules(copy_tree("deep")))
    assert qualnames(deep) == [
        "Status",
        "FizzBuzz",
        "Echo",
        "Bang",
        "Deepest",
        "Timely",
        "One",
        "Two",
        "G1",
    ]


# -- build_tree --------------------------------------------------------------


@pytest.fixture
def deep_tree(copy_tree: Copy):
    deep = copy_tree("deep")
    return discover(deep, import_modules(deep)[0].DeepRoot, url_prefix="/api/")


def test_deep_tree(deep_tree) -> None:
    root = deep_tree.root
    assert deep_tree.url_prefix == "/api"
    assert (root.path, root.name, root.branch_name) == ("/api/deep", "Deep", "deep")
    assert root.description == "The root of the deep tree"
    assert [b.path for b in root.branches] == [
        "/api/deep/alpha",
        "/api/deep/beta",
        "/api/deep/empty",
    ]
    assert [leaf.path for leaf in root.leaves] == ["/api/deep/status"]

    alpha, beta, empty = root.branches
    assert [leaf.leaf_name for leaf in alpha.leaves] == [
        "fizz_buzz",
        "echo",
        "bang",
        "timely",
    ]
    assert [b.path for b in alpha.branches] == ["/api/deep/alpha/inner"]
    assert [leaf.path for leaf in alpha.branches[0].leaves] == [
        "/api/deep/alpha/inner/deepest"
    ]
    assert [leaf.path for leaf in beta.leaves] == [
        "/api/deep/beta/one",
        "/api/deep/beta/two",
    ]
    assert [b.path for b in beta.branches] == ["/api/deep/beta/gamma"]
    assert (empty.branches, empty.leaves) == ((), ())

    fizz = alpha.leaves[0]
    assert (fizz.name, fizz.description, fizz.job_type) == (
        "FizzBuzz Job",
        "Solve FizzBuzz",
        "alpha_fizz_buzz",
    )
    assert set(fizz.cls.Params().fields) == {"n", "fizzDivisor"}
    assert set(alpha.leaves[2].cls.Params().fields) == set()


def test_tree_walks_and_lookups(deep_tree) -> None:
    assert [b.path for b in deep_tree.branches()] == [
        "/api/deep",
        "/api/deep/alpha",
        "/api/deep/alpha/inner",
        "/api/deep/beta",
        "/api/deep/beta/gamma",
        "/api/deep/empty",
    ]
    leaves = list(deep_tree.leaves())
    assert [leaf.job_type for leaf in leaves] == [
        "deep_status",
        "alpha_fizz_buzz",
        "alpha_echo",
        "alpha_bang",
        "alpha_timely",
        "inner_deepest",
        "beta_one",
        "beta_two",
        "gamma_g1",
    ]
    assert isinstance(deep_tree.find("/api/deep/beta"), Branch)
    leaf = deep_tree.find("/api/deep/beta/gamma/g1")
    assert isinstance(leaf, Leaf) and leaf.cls.__qualname__ == "G1"
    assert deep_tree.find("/deep/beta") is None
    assert deep_tree.find("/api/deep/beta/") is None

    assert deep_tree.job_classes() == [leaf.cls for leaf in leaves]
    registry = JobRegistry(deep_tree.job_classes())
    assert registry.get("gamma_g1") is leaf.cls


def test_transparent_classes_are_not_nodes(deep_tree) -> None:
    names = {
        node.cls.__qualname__ for node in [*deep_tree.branches(), *deep_tree.leaves()]
    }
    assert "Timed" not in names and "AlphaBase" not in names
    # Timed hangs under the root; Timely mixes it into alpha.
    assert deep_tree.find("/api/deep/status").description == "A timed job"
    assert deep_tree.find("/api/deep/alpha/timely").job_type == "alpha_timely"


def test_job_type_comes_from_the_branch_directly_above(deep_tree) -> None:
    deepest = deep_tree.find("/api/deep/alpha/inner/deepest")
    assert deepest.job_type == deepest.cls.JOB_TYPE == "inner_deepest"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ""),
        ("/", ""),
        ("api", "/api"),
        ("/api/", "/api"),
        ("/a/v1.2~x-y_", "/a/v1.2~x-y_"),
    ],
)
def test_url_prefix_is_normalised(copy_tree: Copy, prefix: str, expected: str) -> None:
    flat = copy_tree("flat")
    tree = discover(flat, import_modules(flat)[2].FlatRoot, url_prefix=prefix)
    assert tree.url_prefix == expected
    assert tree.root.path == f"{expected}/flat"


@pytest.mark.parametrize("prefix", ["/a//b", "/a b", "/../x", "/a?b"])
def test_bad_url_prefix(copy_tree: Copy, prefix: str) -> None:
    flat = copy_tree("flat")
    with pytest.raises(JobTreeError, match="url_prefix .* is not a safe path segment"):
        discover(flat, import_modules(flat)[2].FlatRoot, url_prefix=prefix)


BROKEN = {
    "broken_siblings": [
        (
            r"/r/same is claimed by \S+\.a\.Same and \S+\.b\.SameBranch:"
            " two siblings with one name"
        ),
    ],
    "broken_jobtype": [r"jobType 'x_y_z' is claimed by \S+\.jobs\.Z and \S+\.jobs\.YZ"],
    "broken_reserved": [
        (
            r"\S+\.jobs\.Jobs: LEAF_NAME 'jobs' is reserved by the API"
            r" \(reserved: branches, cancel, console, "
        ),
        r"\S+\.jobs\.Docs: BRANCH_NAME 'docs' is reserved",
        r"\S+\.jobs\.Console: LEAF_NAME 'console' is reserved",
    ],
    "broken_unsafe": [
        r"\S+\.jobs\.Spaced: LEAF_NAME 'a b' is not a safe path segment",
        r"\S+\.jobs\.Dots: BRANCH_NAME '\.\.' is not a safe path segment",
        r"\S+\.jobs\.Slashed: LEAF_NAME 'x/y' is not a safe path segment",
        r"\S+\.jobs\.Blank: LEAF_NAME '' is not a safe path segment",
        r"\S+\.jobs\.NotText: BRANCH_NAME must be a str, not int",
    ],
    "broken_both": [r"\S+\.jobs\.Both sets both BRANCH_NAME and LEAF_NAME"],
    "broken_leaf_subclass": [
        (
            r"\S+\.jobs\.Parent is a leaf but has subclasses:"
            r" \S+\.jobs\.Child and \S+\.jobs\.Quiet"
        ),
    ],
    "broken_params": [
        (
            r"\S+\.jobs\.Clash: Params field\(s\) 'cas' and 'uuid'"
            " clash with job document fields"
        ),
        (
            r"\S+\.jobs\.Methods: Params field\(s\) 'LIMIT' \(\S+\.jobs\.Shared\.LIMIT\),"
            r" 'MAX_ERRORS' \(\S+\.RuntimeJob\.MAX_ERRORS\),"
            r" 'datastore' \(set by RuntimeJob\.__init__\),"
            r" 'dump' \(\S+\.RuntimeJob\.dump\),"
            r" 'enqueue' \(\S+\.RuntimeJob\.enqueue\),"
            r" 'helper' \(\S+\.jobs\.Shared\.helper\),"
            r" 'key' \(\S+\.RuntimeJob\.key\),"
            r" 'queue' \(set by RuntimeJob\.__init__\),"
            r" 'reload' \(\S+\.RuntimeJob\.reload\),"
            r" 'run' \(\S+\.jobs\.Shared\.run\)"
            r" and 'save' \(\S+\.RuntimeJob\.save\)"
            r" clash with attributes of the job class; rename the field"
            r" \(data_key keeps its name in the API: key_ = fields\.String\(data_key=\"key\"\)\)$"
        ),
    ],
    "broken_vanish": [
        (
            r"\S+\.jobs\.Forgotten defines run\(\) but is no leaf and no leaf derives"
            r" from it, so it would not appear in the tree: set LEAF_NAME to make it a"
            r" leaf, or derive a leaf from it, or define it outside modules_dir$"
        ),
        r"\S+\.jobs\.OnlyParams defines Params but is no leaf and no leaf derives",
        r"\S+\.jobs\.Assigned defines Params but is no leaf",
        r"\S+\.jobs\.Helper defines run\(\) but is no leaf",
    ],
    "broken_abstract": [r"\S+\.jobs\.Lazy is a leaf but does not implement run\(\)"],
    "broken_many": [
        r"\S+\.jobs\.Reserved: BRANCH_NAME 'info' is reserved",
        r"\S+\.jobs\.Both sets both",
        r"\S+\.jobs\.Lazy is a leaf but does not implement run\(\)",
        r"/r/lazy is claimed by \S+\.jobs\.Lazy and \S+\.jobs\.Twin",
        r"jobType 'r_lazy' is claimed by \S+\.jobs\.Lazy and \S+\.jobs\.Twin",
    ],
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_tree_errors(copy_tree: Copy, name: str) -> None:
    directory = copy_tree(name)
    root = import_modules(directory)[0].Root
    with pytest.raises(JobTreeError) as info:
        discover(directory, root)
    problems = info.value.problems
    assert len(problems) == len(BROKEN[name]), problems
    for problem, pattern in zip(problems, BROKEN[name]):
        assert re.match(pattern, problem), problem
    # One exception, each problem on its own line.
    lines = str(info.value).splitlines()
    assert (
        lines[0]
        == f"the job tree has {len(problems)} problem{'s' * (len(problems) > 1)}:"
    )
    assert lines[1:] == [f"  - {problem}" for problem in problems]


def test_root_without_branch_name(copy_tree: Copy) -> None:
    directory = copy_tree("broken_root")
    root = import_modules(directory)[0].Root
    with pytest.raises(JobTreeError) as info:
        discover(directory, root)
    assert len(info.value.problems) == 1
    assert re.fullmatch(
        r"the root job class \S+\.Root does not set BRANCH_NAME in its own body",
        info.value.problems[0],
    )


def test_root_must_set_its_own_branch_name(copy_tree: Copy) -> None:
    modules = import_modules(copy_tree("deep"))

    class Inherits(modules[0].DeepRoot):
        pass

    with pytest.raises(JobTreeError, match="does not set BRANCH_NAME"):
        build_tree(Inherits, [])


def test_root_must_be_a_job_class(copy_tree: Copy) -> None:
    message = "base_job must be a subclass of flask_spacewalk.BaseJob, not <class 'object'>"
    with pytest.raises(ConfigurationError) as info:
        build_tree(object, [])  # type: ignore[arg-type]
    assert str(info.value) == message
    # Refused before any job module is imported.
    directory = copy_tree("flat")
    with pytest.raises(ConfigurationError) as info:
        discover(directory, object)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert not [m for m in sys.modules if m.startswith(PRIVATE)]


def test_a_modules_dir_that_is_not_found_is_listed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JobModuleImportError) as info:
        import_modules("jbos", root_path=str(tmp_path))
    assert str(info.value) == (
        f"modules_dir 'jbos' is neither a directory (looked for {tmp_path / 'jbos'})"
        " nor an importable module"
    )


def test_build_tree_ignores_other_classes(copy_tree: Copy) -> None:
    modules = import_modules(copy_tree("deep"))
    root = modules[0].DeepRoot
    classes = [int, BaseJob, root, *find_job_classes(modules, root)]
    assert build_tree(root, classes).find("/deep/alpha/echo") is not None


def test_tree_error_pickles() -> None:
    error = JobTreeError(["one", "two"])
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.problems, str(copy)) == (error.problems, str(error))


def test_reserved_names() -> None:
    # SPEC section 2's list, upcoming routes included, so that no tree
    # built today takes a name a later version serves.
    assert RESERVED_NAMES == {
        "branches", "leaves", "post-schema", "job", "jobs", "progress", "info",
        "data", "dump", "cancel", "retry", "events", "workers", "queues",
        "console", "openapi.json", "docs", "metrics", "healthz", "readyz",
    }


def test_order_across_modules_follows_creation(tmp_path: Path) -> None:
    class Probe(BaseJob):
        pass

    if "_definition_index" not in vars(Probe):
        pytest.skip("needs BaseJob's class creation counter (_definition_index)")
    # b.py is imported first, by a.py, so its branch was defined first.
    (tmp_path / "__init__.py").write_text(
        "from flask_spacewalk import BaseJob\n\n\n"
        "class Root(BaseJob):\n    BRANCH_NAME = 'r'\n"
    )
    (tmp_path / "a.py").write_text(
        "from . import Root\nfrom . import b  # noqa\n\n\n"
        "class A(Root):\n    BRANCH_NAME = 'a'\n"
    )
    (tmp_path / "b.py").write_text(
        "from . import Root\n\n\nclass B(Root):\n    BRANCH_NAME = 'b'\n"
    )
    root = import_modules(tmp_path)[0].Root
    tree = discover(tmp_path, root)
    assert [b.branch_name for b in tree.root.branches] == ["b", "a"]
