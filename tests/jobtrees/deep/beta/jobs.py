from . import Beta


class One(Beta):
    NAME = "One"
    DESCRIPTION = "First beta leaf"
    LEAF_NAME = "one"

    def run(self):
        return 200


class Two(Beta):
    NAME = "Two"
    DESCRIPTION = "Second beta leaf"
    LEAF_NAME = "two"

    def run(self):
        return 200
