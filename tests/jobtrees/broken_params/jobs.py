from marshmallow import Schema, fields

from . import Root


class Clash(Root):
    LEAF_NAME = "clash"

    class Params(Schema):
        uuid = fields.String()
        count = fields.Integer(data_key="cas")
        fine = fields.Integer()

    def run(self):
        return 200
