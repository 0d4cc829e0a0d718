"""The job tree: the branches and leaves under a root job class.

:func:`build_tree` checks the job classes and arranges them as a :class:`Tree`
of :class:`Branch` and :class:`Leaf` nodes. Every mistake in the tree is
reported at once, in one :exc:`~flask_spacewalk.errors.JobTreeError`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .base_job import (
    BaseJob,
    attribute_clashes,
    document_field_clashes,
    own_name,
    parent_branch,
)
from .errors import ConfigurationError, JobTreeError
from .runtime.policy import policy_problems

__all__ = [
    "RESERVED_NAMES",
    "Branch",
    "Leaf",
    "Tree",
    "build_tree",
    "check_root",
]

#: Path segments the generated API uses itself, or will (retry, events,
#: workers, queues, metrics, healthz, readyz), so no branch or leaf may take
#: them, at any level: a tree that starts today keeps its paths tomorrow.
RESERVED_NAMES = frozenset(
    {
        "branches",
        "leaves",
        "post-schema",
        "job",
        "jobs",
        "progress",
        "info",
        "data",
        "dump",
        "cancel",
        "retry",
        "events",
        "workers",
        "queues",
        "console",
        "openapi.json",
        "docs",
        "metrics",
        "healthz",
        "readyz",
    }
)

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.~-]+")


@dataclass(frozen=True)
class Leaf:
    """A job that runs, at ``path``."""

    #: The job class.
    cls: type[BaseJob]
    #: The class's ``NAME`` and ``DESCRIPTION``, shown in the API.
    name: str
    description: str
    #: The full URL path, prefix included.
    path: str
    #: The class's ``LEAF_NAME``: the last segment of ``path``.
    leaf_name: str
    #: The class's ``JOB_TYPE``.
    job_type: str


@dataclass(frozen=True)
class Branch:
    """A group of jobs at ``path``; it never runs."""

    #: The branch class.
    cls: type[BaseJob]
    #: The class's ``NAME`` and ``DESCRIPTION``, shown in the API.
    name: str
    description: str
    #: The full URL path, prefix included.
    path: str
    #: The class's ``BRANCH_NAME``: the last segment of ``path``.
    branch_name: str
    #: The direct sub-branches and leaves, in definition order.
    branches: tuple[Branch, ...]
    leaves: tuple[Leaf, ...]


class Tree:
    """The branches and leaves under one root job class.

    :param root: the root branch.
    :param url_prefix: the normalised prefix the paths start with.
    """

    def __init__(self, root: Branch, url_prefix: str = ""):
        self.root = root
        self.url_prefix = url_prefix
        self._nodes: dict[str, Branch | Leaf] = {b.path: b for b in self.branches()}
        self._nodes.update((leaf.path, leaf) for leaf in self.leaves())

    def __repr__(self) -> str:
        return f"<Tree {self.root.path!r}>"

    def branches(self) -> Iterator[Branch]:
        """Every branch, depth first, the root first."""
        stack = [self.root]
        while stack:
            branch = stack.pop()
            yield branch
            stack.extend(reversed(branch.branches))

    def leaves(self) -> Iterator[Leaf]:
        """Every leaf, branch by branch in :meth:`branches` order."""
        for branch in self.branches():
            yield from branch.leaves

    def find(self, path: str) -> Branch | Leaf | None:
        """The branch or leaf at exactly ``path``, prefix included."""
        return self._nodes.get(path)

    def job_classes(self) -> list[type[BaseJob]]:
        """The leaves' classes, for a :class:`~.runtime.registry.JobRegistry`."""
        return [leaf.cls for leaf in self.leaves()]


def _describe(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _name_problems(cls: type) -> list[str]:
    """Problems with the names ``cls`` sets in its own body."""
    problems = []
    for attribute in ("BRANCH_NAME", "LEAF_NAME"):
        value = vars(cls).get(attribute)
        if value is None:
            continue
        if not isinstance(value, str):
            kind = type(value).__name__
            problems.append(f"{_describe(cls)}: {attribute} must be a str, not {kind}")
        elif not _SAFE_NAME.fullmatch(value) or not value.strip("."):
            problems.append(
                f"{_describe(cls)}: {attribute} {value!r} is not a safe path segment"
                " (use letters, digits and _ . ~ -, not only dots)"
            )
        elif value in RESERVED_NAMES:
            problems.append(
                f"{_describe(cls)}: {attribute} {value!r} is reserved by the API"
                f" (reserved: {', '.join(sorted(RESERVED_NAMES))})"
            )
    if (
        own_name(cls, "BRANCH_NAME") is not None
        and own_name(cls, "LEAF_NAME") is not None
    ):
        problems.append(
            f"{_describe(cls)} sets both BRANCH_NAME and LEAF_NAME;"
            " a class is a branch or a leaf"
        )
    return problems


def _leaf_problems(cls: type[BaseJob]) -> list[str]:
    problems = []
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        problems.append(
            f"{_describe(cls)} is a leaf but does not implement"
            f" {_and([f'{name}()' for name in abstract])}"
        )
    clashes = document_field_clashes(cls)
    if clashes:
        problems.append(
            f"{_describe(cls)}: Params field(s) {_and([repr(c) for c in clashes])}"
            " clash with job document fields"
        )
    attributes = attribute_clashes(cls)
    if attributes:
        listed = _and([f"{name!r} ({where})" for name, where in attributes])
        problems.append(
            f"{_describe(cls)}: Params field(s) {listed} clash with attributes of"
            " the job class; rename the field (data_key keeps its name in the API:"
            ' key_ = fields.String(data_key="key"))'
        )
    problems += [f"{_describe(cls)}: {problem}" for problem in policy_problems(cls)]
    return problems


def _vanishing_problems(members: list[type[BaseJob]]) -> list[str]:
    """Nameless classes that define ``Params`` or ``run()`` for no leaf.

    Such a class is neither a node nor a base of one, so it would be left
    out of the tree without a word: most likely its ``LEAF_NAME`` was
    forgotten. A nameless base of a leaf, and a mixin that defines neither,
    are fine.
    """
    bases_of_leaves: set[type] = set()
    for cls in members:
        if own_name(cls, "LEAF_NAME") is not None:
            bases_of_leaves.update(cls.__mro__[1:])
    problems = []
    for cls in members:
        if cls.is_branch() or cls.is_leaf() or cls in bases_of_leaves:
            continue
        defined = [
            label for name, label in (("Params", "Params"), ("run", "run()"))
            if name in vars(cls)
        ]
        if defined:
            problems.append(
                f"{_describe(cls)} defines {_and(defined)} but is no leaf and no"
                " leaf derives from it, so it would not appear in the tree: set"
                " LEAF_NAME to make it a leaf, or derive a leaf from it, or define"
                " it outside modules_dir"
            )
    return problems


def _normalise_prefix(url_prefix: str, problems: list[str]) -> str:
    stripped = url_prefix.strip("/")
    if not stripped:
        return ""
    for segment in stripped.split("/"):
        if not _SAFE_NAME.fullmatch(segment) or not segment.strip("."):
            problems.append(
                f"url_prefix {url_prefix!r}: {segment!r} is not a safe path segment"
            )
    return f"/{stripped}"


def check_root(root: object) -> None:
    """Refuse a root job class that is not a :class:`BaseJob` subclass.

    :raises ConfigurationError: ``root`` is something else.
    """
    if not (isinstance(root, type) and issubclass(root, BaseJob)):
        raise ConfigurationError(
            f"base_job must be a subclass of flask_spacewalk.BaseJob, not {root!r}"
        )


def build_tree(
    root: type[BaseJob], classes: Iterable[type], url_prefix: str = ""
) -> Tree:
    """Arrange ``root`` and its subclasses among ``classes`` as a tree.

    A class that sets ``BRANCH_NAME`` in its own body is a branch, one that
    sets ``LEAF_NAME`` a leaf; one that sets neither is transparent and its
    subclasses hang under its nearest branch. Classes that are not
    subclasses of ``root`` are ignored.

    :param root: the root job class; it must set ``BRANCH_NAME``.
    :param classes: the classes, in definition order (see
        :func:`~flask_spacewalk.discovery.find_job_classes`).
    :param url_prefix: the mount point, ``""`` or like ``"/api"``.
    :raises ConfigurationError: ``root`` is not a :class:`BaseJob` subclass.
    :raises JobTreeError: listing every problem found, one per line.
    """
    check_root(root)
    root_name = own_name(root, "BRANCH_NAME")
    if root_name is None:
        # Without it nothing hangs under the root: report this alone.
        problem = f"the root job class {_describe(root)} does not set BRANCH_NAME"
        raise JobTreeError([f"{problem} in its own body"])
    problems: list[str] = []
    prefix = _normalise_prefix(url_prefix, problems)
    problems += _name_problems(root)

    members = [
        c for c in dict.fromkeys(classes) if c is not root and issubclass(c, root)
    ]
    children: dict[type, list[type[BaseJob]]] = {root: []}
    named: list[type[BaseJob]] = []
    leaf_subclasses: dict[type, list[str]] = {}
    for cls in members:
        problems += _name_problems(cls)
        for ancestor in cls.__mro__[1:]:
            if (
                ancestor is not root
                and issubclass(ancestor, root)
                and own_name(ancestor, "LEAF_NAME") is not None
            ):
                leaf_subclasses.setdefault(ancestor, []).append(_describe(cls))
        if own_name(cls, "BRANCH_NAME") is not None:
            children[cls] = []
            named.append(cls)
        elif own_name(cls, "LEAF_NAME") is not None:
            problems += _leaf_problems(cls)
            named.append(cls)
    problems += _vanishing_problems(members)
    for leaf, subclasses in leaf_subclasses.items():
        problems.append(
            f"{_describe(leaf)} is a leaf but has subclasses: {_and(subclasses)}"
            " (derive the jobs from a shared base that sets no LEAF_NAME instead)"
        )
    for cls in named:
        parent = parent_branch(cls)
        if parent in children:
            children[parent].append(cls)
        else:
            problems.append(
                f"{_describe(cls)} hangs under the branch"
                f" {_describe(parent) if parent else None}, which is not in the tree"
                " (define it below modules_dir or in the root class's module)"
            )

    root_branch = _make_branch(root, root_name, prefix, children, problems)
    tree = Tree(root_branch, prefix)
    job_types: dict[str, list[str]] = {}
    for leaf_node in tree.leaves():
        job_types.setdefault(leaf_node.job_type, []).append(_describe(leaf_node.cls))
    for job_type, claimants in job_types.items():
        if len(claimants) > 1:
            problems.append(f"jobType {job_type!r} is claimed by {_and(claimants)}")
    if problems:
        raise JobTreeError(problems)
    return tree


def _make_branch(
    cls: type[BaseJob],
    branch_name: str,
    parent_path: str,
    children: dict[type, list[type[BaseJob]]],
    problems: list[str],
) -> Branch:
    path = f"{parent_path}/{branch_name}"
    branches: list[Branch] = []
    leaves: list[Leaf] = []
    by_name: dict[str, list[str]] = {}
    for child in children[cls]:
        sub_branch = own_name(child, "BRANCH_NAME")
        segment = sub_branch if sub_branch is not None else own_name(child, "LEAF_NAME")
        assert segment is not None
        by_name.setdefault(segment, []).append(_describe(child))
        if sub_branch is not None:
            branches.append(_make_branch(child, segment, path, children, problems))
            continue
        leaves.append(
            Leaf(
                cls=child,
                name=child.NAME,
                description=child.DESCRIPTION,
                path=f"{path}/{segment}",
                leaf_name=segment,
                job_type=child.JOB_TYPE,
            )
        )
    for segment, claimants in by_name.items():
        if len(claimants) > 1:
            problems.append(
                f"{path}/{segment} is claimed by {_and(claimants)}:"
                " two siblings with one name"
            )
    return Branch(
        cls=cls,
        name=cls.NAME,
        description=cls.DESCRIPTION,
        path=path,
        branch_name=branch_name,
        branches=tuple(branches),
        leaves=tuple(leaves),
    )
