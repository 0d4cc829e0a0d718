"""In a folder without __init__.py."""
from .. import Beta


class Gamma(Beta):
    NAME = "Gamma"
    DESCRIPTION = "A branch from a folder without __init__.py"
    BRANCH_NAME = "gamma"


class G1(Gamma):
    NAME = "G1"
    DESCRIPTION = "The gamma leaf"
    LEAF_NAME = "g1"

    def run(self):
        return 200
