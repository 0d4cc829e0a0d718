"""A job whose fields several processes change at once (tests/test_reliability_integrity.py)."""
from __future__ import annotations

from marshmallow import Schema, fields

from flask_spacewalk import BaseJob

WRITERS = 3


class ContendedRoot(BaseJob):
    NAME = "Contention"
    BRANCH_NAME = "contended"
    DESCRIPTION = "jobs written by many processes at once"


class ContendedJob(ContendedRoot):
    NAME = "Contended"
    LEAF_NAME = "job"
    DESCRIPTION = "one attribute per writer process"

    class Params(Schema):
        # one attribute per writer, so each writer's last value is known
        w0 = fields.Integer(load_default=-1)
        w1 = fields.Integer(load_default=-1)
        w2 = fields.Integer(load_default=-1)

    def run(self) -> int:
        return 200
