from outside_extra import ExtraBranch


class Stray(ExtraBranch):
    """Its branch is outside modules_dir."""

    LEAF_NAME = "stray"

    def run(self):
        return 200
