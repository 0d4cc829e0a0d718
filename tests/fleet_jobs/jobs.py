"""The job the worker-record tests run in worker processes: one that holds
its worker until the test lets it go."""
from __future__ import annotations

import os
import time
from typing import Any

from marshmallow import Schema, fields

from flask_spacewalk import BaseJob


class FleetRoot(BaseJob):
    NAME = "Fleet tests"
    BRANCH_NAME = "fleet"
    DESCRIPTION = "jobs for the worker-record tests"


class GateJob(FleetRoot):
    NAME = "Gate"
    LEAF_NAME = "gate"
    DESCRIPTION = "writes <trace>.start (its pid), waits for <trace>.go, returns `result`"

    class Params(Schema):
        trace = fields.String(required=True)
        result = fields.Integer(load_default=200)

    def run(self) -> Any:
        with open(f"{self.trace}.start", "w") as f:
            f.write(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not os.path.exists(f"{self.trace}.go") and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.result
