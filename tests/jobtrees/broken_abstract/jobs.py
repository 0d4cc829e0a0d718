from . import Root


class Lazy(Root):
    """A leaf that forgot run()."""

    LEAF_NAME = "lazy"
