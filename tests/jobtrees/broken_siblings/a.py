from . import Root


class Same(Root):
    LEAF_NAME = "same"

    def run(self):
        return 200
