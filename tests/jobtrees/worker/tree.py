from flask_spacewalk import BaseJob


class WRoot(BaseJob):
    BRANCH_NAME = "w"


class WBranch(WRoot):
    BRANCH_NAME = "b"


class WMixin(WBranch):
    def run(self):
        return 200


class WLeaf(WMixin):
    LEAF_NAME = "leaf"


class WAbstract(WBranch):
    LEAF_NAME = "abstract"
