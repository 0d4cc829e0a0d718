"""The example jobs of the original Spacewalk README, on flask-spacewalk."""
from __future__ import annotations

import random
import time
from typing import Any

from marshmallow import Schema, fields, validate

from flask_spacewalk import BaseJob, BaseJobSchema


class BaseExampleJobSchema(BaseJobSchema):
    """Fields every example job stores beside its parameters."""


class BaseExampleJob(BaseJob):
    NAME = "Spacewalk Example"
    BRANCH_NAME = "examples"
    DESCRIPTION = "example Spacewalk jobs"

    BASE_SCHEMA = BaseExampleJobSchema

    def run(self) -> Any:
        self.job_log_info(f"starting {self.jobType} job {self.uuid}")


class WasteTimeJob(BaseExampleJob):
    NAME = "Waste Time Job"
    LEAF_NAME = "waste_time"
    DESCRIPTION = "Randomly logs while wasting time"

    class Params(Schema):
        delay = fields.Integer(load_default=10, validate=validate.Range(min=0, max=3600))

    def run(self) -> tuple[int, None]:
        super().run()
        end = time.time() + self.delay
        log_interval = self.delay / 10
        while time.time() < end:
            pause = min((random.random() + 0.5) * log_interval, max(0.0, end - time.time()))
            time.sleep(pause)
            self.add_to_completeness(pause / self.delay)
            self.job_log_info(f"{max(0.0, end - time.time()):.2f} seconds remaining")
        return 200, None


class FizzBuzzJobSchema(BaseExampleJobSchema):
    output = fields.List(fields.String())


class FizzBuzzJob(BaseExampleJob):
    NAME = "FizzBuzz Job"
    LEAF_NAME = "fizz_buzz"
    DESCRIPTION = "Solve FizzBuzz with settable n, fizz & buzz divisors"

    BASE_SCHEMA = FizzBuzzJobSchema

    class Params(Schema):
        n = fields.Integer(load_default=50, validate=validate.Range(min=0, max=100_000))
        fizzDivisor = fields.Integer(load_default=3, validate=validate.Range(min=1))
        buzzDivisor = fields.Integer(load_default=5, validate=validate.Range(min=1))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.output = kwargs.get("output", [])

    def run(self) -> tuple[int, None]:
        super().run()
        output = []
        for i in range(1, self.n + 1):
            word = ("Fizz" if i % self.fizzDivisor == 0 else "") + (
                "Buzz" if i % self.buzzDivisor == 0 else ""
            )
            output.append(word or str(i))
        self.update_attrs(output=output)
        return 200, None

    def get_data(self) -> Any:
        data = super().get_data()
        data["output"] = self.output
        return data
