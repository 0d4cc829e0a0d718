"""The job classes of docs/jobs.rst; tests/test_docs.py runs every one of them."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from flask_spacewalk import NO_RESULT, BaseJob, BaseJobSchema


class ReportJobs(BaseJob):
    """The root of the tree: a branch, served at ``/reports``."""

    NAME = "Reports"
    DESCRIPTION = "Jobs that build reports"
    BRANCH_NAME = "reports"


class SalesReports(ReportJobs):
    NAME = "Sales reports"
    DESCRIPTION = "Reports about sales"
    BRANCH_NAME = "sales"


class TotalsSchema(BaseJobSchema):
    total = fields.Integer()


class TotalsJob(SalesReports):
    NAME = "Sales totals"
    DESCRIPTION = "Adds up a month of sales"
    LEAF_NAME = "totals"  # POST /reports/sales/totals/job; JOB_TYPE "sales_totals"

    BASE_SCHEMA = TotalsSchema  # stored beside the parameters

    class Params(Schema):
        month = fields.String(required=True, validate=validate.Regexp(r"^\d{4}-\d{2}$"))
        days = fields.Integer(load_default=30, validate=validate.Range(min=1, max=31))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.total = kwargs.get("total", 0)  # a BASE_SCHEMA field: set it yourself

    def run(self) -> int:
        self.job_log_info(f"adding up {self.days} days of {self.month}")
        self.set_tick_value(1 / self.days)
        total = 0
        for day in range(1, self.days + 1):
            total += 10 * day  # the real work would go here
            self.tick()
        self.update_attrs(total=total)
        return 200

    def get_data(self) -> Any:
        return {"month": self.month, "total": self.total}


class AttemptsSchema(BaseJobSchema):
    attempts = fields.Integer()


class WaitForDataJob(ReportJobs):
    NAME = "Wait for data"
    DESCRIPTION = "Runs again every minute until the data is there"
    LEAF_NAME = "wait_for_data"

    BASE_SCHEMA = AttemptsSchema

    class Params(Schema):
        ready_after = fields.Integer(load_default=3, validate=validate.Range(min=1, max=10))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.attempts = kwargs.get("attempts", 0)

    def run(self) -> tuple[int, float]:
        self.update_attrs(attempts=self.attempts + 1)
        if self.attempts < self.ready_after:  # stands for "is the data there yet?"
            return NO_RESULT, 60  # run me again in 60 seconds
        return 200, 0


class ImportSchema(BaseJobSchema):
    stage = fields.String()
    rows = fields.Integer()


class ImportJob(ReportJobs):
    NAME = "Import"
    DESCRIPTION = "Imports rows from a source"
    LEAF_NAME = "import"

    BASE_SCHEMA = ImportSchema
    MAX_ERRORS = 5  # unexpected errors tolerated before the job fails with 500

    class Params(Schema):
        source = fields.String(required=True)
        batches = fields.Integer(load_default=4, validate=validate.Range(min=0))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stage = kwargs.get("stage", "waiting")
        self.rows = kwargs.get("rows", 0)

    def run(self) -> int:
        if self.source.startswith("ftp:"):
            self.raise_error_finish(400, f"cannot read {self.source}: ftp is not supported")
        if self.batches == 0:
            self.raise_warning_finish(204, f"{self.source} has nothing to import")
        self.update_attrs(stage="importing")
        for _ in range(self.batches):
            rows = 100  # one slow batch read from the source would go here
            self.keep_alive()  # no progress call for a while: say we are alive
            # record_change re-applies the function after a conflicting save,
            # so the count is right even when another writer saved meanwhile.
            self.record_change(lambda n=rows: setattr(self, "rows", self.rows + n))
            self.add_to_completeness(1 / self.batches)
        self.update_attrs(stage="done")
        return 200

    def progress(self) -> dict[str, Any]:
        # served by GET /reports/progress/<uuid>
        return {**super().progress(), "stage": self.stage, "rows": self.rows}


class FetchRatesJob(ReportJobs):
    NAME = "Fetch rates"
    DESCRIPTION = "Fetches exchange rates from a service that is sometimes down"
    LEAF_NAME = "fetch_rates"

    MAX_ERRORS = 7  # the 7th error ends the job with 500
    RETRY_DELAY = 5  # the first retry waits 5 s,
    RETRY_BACKOFF = 2  # each next one twice as long (plus up to 10 %),
    RETRY_MAX_DELAY = 600  # and none more than 10 minutes
    TIMEOUT = 120  # a run still going after 2 minutes is stopped: error 504

    class Params(Schema):
        currency = fields.String(load_default="EUR", validate=validate.Length(equal=3))

    def run(self) -> int:
        self.job_log_info(f"fetching the rates of {self.currency}")
        # The request to the rates service would go here: an exception it
        # raises is recorded, and the job retried as the policy says.
        return 200
