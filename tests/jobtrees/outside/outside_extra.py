"""Job classes outside modules_dir: not in the tree."""
from outside_root import OutsideRoot


class Extra(OutsideRoot):
    LEAF_NAME = "extra"

    def run(self):
        return 200


class ExtraBranch(OutsideRoot):
    BRANCH_NAME = "extra_branch"
