"""``BaseJob``: the Spacewalk layer over the runtime job.

A job class names itself with ``NAME`` and ``DESCRIPTION`` and places itself
in the tree with ``BRANCH_NAME`` (a branch: groups jobs, never runs) or
``LEAF_NAME`` (a leaf: a job that runs). Only names set in the class's own
body count, so a class that sets neither is transparent. For a leaf,
``JOB_TYPE`` and the persisted ``SCHEMA`` (``BASE_SCHEMA`` + ``Params``) are
derived when the class is defined.
"""
from __future__ import annotations

import itertools
from typing import Any, ClassVar

from marshmallow import Schema, missing

from .runtime.job import DOCUMENT_FIELDS, BaseJobSchema, RuntimeJob

__all__ = ["BaseJob", "BaseJobSchema"]


#: Numbers classes in creation order, which is the tree's listing order.
_definition_counter = itertools.count()


def own_name(cls: type, attribute: str) -> str | None:
    """``attribute`` when set in ``cls``'s own body, else ``None``."""
    value = cls.__dict__.get(attribute)
    return value if isinstance(value, str) else None


class BaseJob(RuntimeJob):
    """Derive your root job class from this one.

    Class attributes:

    - ``NAME``, ``DESCRIPTION``: shown in the API.
    - ``BRANCH_NAME`` or ``LEAF_NAME``: where the class sits in the tree.
    - ``Params``: the marshmallow schema of the POST parameters (leaves).
    - ``BASE_SCHEMA``: persisted fields beyond the parameters; derive it
      from :class:`BaseJobSchema`.

    After ``__init__``, each ``Params`` field that was given, or that has a
    load default, is an attribute of the job.
    """

    NAME: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""
    BRANCH_NAME: ClassVar[str | None] = None
    LEAF_NAME: ClassVar[str | None] = None

    BASE_SCHEMA: ClassVar[type[Schema]] = BaseJobSchema

    class Params(Schema):
        """No parameters."""

    #: ``(attribute, load default)`` of every Params field, set per leaf.
    _param_defaults: ClassVar[tuple[tuple[str, Any], ...]] = ()
    _definition_index: ClassVar[int] = -1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._definition_index = next(_definition_counter)
        leaf_name = own_name(cls, "LEAF_NAME")
        if leaf_name is None:
            return
        branch = parent_branch(cls)
        branch_name = own_name(branch, "BRANCH_NAME") if branch else None
        cls.JOB_TYPE = f"{branch_name}_{leaf_name}" if branch_name else leaf_name
        cls.SCHEMA = type(
            f"{cls.__name__}Schema",
            (cls.BASE_SCHEMA, cls.Params),
            {"__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.SCHEMA"},
        )
        # marshmallow loads a field under its attribute name, and dumps it
        # from there: that name is the job's attribute.
        cls._param_defaults = tuple(
            (field.attribute or name, field.load_default)
            for name, field in cls.Params._declared_fields.items()
        )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for name, default in self._param_defaults:
            if name in kwargs:
                setattr(self, name, kwargs[name])
            elif default is not missing:
                setattr(self, name, default() if callable(default) else default)

    @classmethod
    def is_branch(cls) -> bool:
        """Whether the class's own body sets ``BRANCH_NAME``."""
        return own_name(cls, "BRANCH_NAME") is not None

    @classmethod
    def is_leaf(cls) -> bool:
        """Whether the class's own body sets ``LEAF_NAME``."""
        return own_name(cls, "LEAF_NAME") is not None


def parent_branch(cls: type) -> type | None:
    """The nearest ancestor of ``cls`` that names a branch, if any."""
    for ancestor in cls.__mro__[1:]:
        if own_name(ancestor, "BRANCH_NAME") is not None:
            return ancestor
    return None


def document_field_clashes(cls: type[BaseJob]) -> list[str]:
    """Params fields of ``cls`` whose names are job document fields."""
    params: dict[str, Any] = cls.Params._declared_fields
    names = {field.data_key or name for name, field in params.items()}
    names |= {field.attribute or name for name, field in params.items()}
    return sorted(names & DOCUMENT_FIELDS)


#: What :class:`RuntimeJob`'s ``__init__`` sets on a job besides the document
#: fields: a Params field of one of these names would replace it.
INSTANCE_ATTRIBUTES = frozenset({"datastore", "queue", "keepalive", "_saved_result"})


def attribute_clashes(cls: type[BaseJob]) -> list[tuple[str, str]]:
    """Params fields of ``cls`` that would replace an attribute of the job.

    The field's attribute name (``attribute=``, else its name; never its
    ``data_key``) is what becomes ``self.<name>``, so a field named like a
    method (``key``, ``save``, ``run``), a class attribute (``MAX_ERRORS``),
    including those of the user's own base classes, or an attribute the
    runtime sets (``datastore``, ``queue``) breaks every job of the class.
    A field of the leaf's ``BASE_SCHEMA`` may have a plain class attribute
    as its default, as ZeroG-style jobs do. Document fields are left to
    :func:`document_field_clashes`.

    :return: ``(attribute name, where it comes from)``, sorted by name.
    """
    params: dict[str, Any] = cls.Params._declared_fields
    stored = set(cls.BASE_SCHEMA._declared_fields) - DOCUMENT_FIELDS
    clashes = []
    for name in sorted({field.attribute or key for key, field in params.items()}):
        if name in DOCUMENT_FIELDS:
            continue
        if name in INSTANCE_ATTRIBUTES:
            clashes.append((name, "set by RuntimeJob.__init__"))
            continue
        owner = next((c for c in cls.__mro__ if name in vars(c)), None)
        if owner is None:
            continue
        value = vars(owner)[name]
        if (
            name in stored
            and not hasattr(BaseJob, name)
            and not callable(value)
            and not hasattr(value, "__get__")
        ):
            continue
        clashes.append((name, f"{owner.__module__}.{owner.__qualname__}.{name}"))
    return clashes
