"""The tree of tests/test_metrics.py and tests/test_health.py: a job that
finishes, one that fails, and a slow one."""
from __future__ import annotations

import time
from typing import Any

from marshmallow import Schema, fields

from flask_spacewalk import BaseJob


class OpsRoot(BaseJob):
    NAME = "Operations tests"
    BRANCH_NAME = "ops"
    DESCRIPTION = "Jobs the metrics tests run"


class Ok(OpsRoot):
    NAME = "Ok"
    LEAF_NAME = "ok"
    DESCRIPTION = "Sleeps a moment, then finishes"

    class Params(Schema):
        seconds = fields.Float(load_default=0.03)

    def run(self) -> Any:
        time.sleep(self.seconds)
        return 200


class Fail(OpsRoot):
    NAME = "Fail"
    LEAF_NAME = "fail"
    DESCRIPTION = "Ends with result 503"

    def run(self) -> Any:
        return 503
