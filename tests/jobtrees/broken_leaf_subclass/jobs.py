from . import Root


class Parent(Root):
    LEAF_NAME = "parent"

    def run(self):
        return 200


class Child(Parent):
    LEAF_NAME = "child"


class Quiet(Parent):
    """Transparent, but still a subclass of a leaf."""
