from marshmallow import Schema, fields

from flask_spacewalk import BaseJobSchema

from . import Root


class Clash(Root):
    LEAF_NAME = "clash"

    class Params(Schema):
        uuid = fields.String()
        count = fields.Integer(data_key="cas")
        fine = fields.Integer()

    def run(self):
        return 200


class Shared(Root):
    """A user's own base: its methods and class attributes are the job's."""

    LIMIT = 3

    def helper(self):
        return self.LIMIT

    def run(self):
        return 200


class Methods(Shared):
    LEAF_NAME = "methods"

    class Params(Schema):
        # Every one of these answered each POST with 500.
        key = fields.String()
        dump = fields.String()
        save = fields.String()
        run = fields.String()
        datastore = fields.String()
        queue = fields.String(data_key="q")
        enqueue = fields.String()
        MAX_ERRORS = fields.Integer()
        helper = fields.String()
        LIMIT = fields.Integer()
        # The attribute, not the data key, becomes self.<name>.
        renamed = fields.String(attribute="reload")
        # Fine: the API says "key", the job has self.key_.
        key_ = fields.String(data_key="key")
        fine = fields.Integer()


class StoredSchema(BaseJobSchema):
    total = fields.Integer()


class Stored(Shared):
    """ZeroG style: a BASE_SCHEMA field of the leaf itself, with a class default."""

    LEAF_NAME = "stored"
    BASE_SCHEMA = StoredSchema

    total = 0

    class Params(Schema):
        total = fields.Integer(load_default=1)
