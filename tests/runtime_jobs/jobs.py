"""Job classes the runtime and worker tests run, in-process and in workers."""
from __future__ import annotations

import os
import time
from typing import Any

from marshmallow import Schema, fields

from flask_spacewalk import NO_RESULT, BaseJob, BaseJobSchema
from flask_spacewalk.runtime.cancel import request_cancel
from flask_spacewalk.runtime.outcome import JobTimedOut


class CountingSchema(BaseJobSchema):
    runs = fields.Integer()
    pids = fields.List(fields.Integer())


class TestRoot(BaseJob):
    NAME = "Runtime tests"
    BRANCH_NAME = "rt"
    DESCRIPTION = "jobs for the runtime tests"
    BASE_SCHEMA = CountingSchema

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.runs = kwargs.get("runs", 0)
        self.pids = kwargs.get("pids", [])

    def count_run(self) -> None:
        self.update_attrs(runs=self.runs + 1, pids=self.pids + [os.getpid()])

    def run(self) -> Any:
        self.count_run()
        return 200


class NoopJob(TestRoot):
    NAME = "No-op"
    LEAF_NAME = "noop"
    DESCRIPTION = "does nothing"

    def run(self) -> Any:
        return 200


class ReturnsJob(TestRoot):
    NAME = "Returns"
    LEAF_NAME = "returns"
    DESCRIPTION = "returns the posted value from run()"

    class Params(Schema):
        value = fields.Raw(allow_none=True)

    def run(self) -> Any:
        super().run()
        value = self.value
        return tuple(value) if isinstance(value, list) else value


class RequeueJob(TestRoot):
    NAME = "Requeue"
    LEAF_NAME = "requeue"
    DESCRIPTION = "returns NO_RESULT until it has run `times` times"

    class Params(Schema):
        times = fields.Integer(load_default=2)
        delay = fields.Float(load_default=0.0, allow_none=True)

    def run(self) -> Any:
        super().run()
        if self.runs < self.times:
            return NO_RESULT if self.delay is None else (NO_RESULT, self.delay)
        return 200


class FailJob(TestRoot):
    NAME = "Fail"
    LEAF_NAME = "fail"
    DESCRIPTION = "raises until it has run `failures` times"

    class Params(Schema):
        failures = fields.Integer(load_default=100)

    def run(self) -> Any:
        super().run()
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")
        return 200


class InterruptJob(TestRoot):
    NAME = "Interrupt"
    LEAF_NAME = "interrupt"
    DESCRIPTION = "calls one of the four interrupts on its first run"

    class Params(Schema):
        kind = fields.String(required=True)

    def run(self) -> Any:
        super().run()
        if self.runs == 1:
            getattr(self, f"raise_{self.kind}")(418, f"{self.kind} now")
        return 200


class SleepJob(TestRoot):
    NAME = "Sleep"
    LEAF_NAME = "sleep"
    DESCRIPTION = "sleeps `seconds` without reporting, then finishes"

    class Params(Schema):
        seconds = fields.Float(load_default=1.0)
        steps = fields.Integer(load_default=1)

    def run(self) -> Any:
        super().run()
        for step in range(self.steps):
            time.sleep(self.seconds / self.steps)
            if self.steps > 1:
                self.set_completeness((step + 1) / self.steps)
        return 200


class CancelJob(TestRoot):
    NAME = "Cancellable"
    LEAF_NAME = "cancellable"
    DESCRIPTION = "runs `seconds` in one of several ways; leaves trace files"

    class Params(Schema):
        #: ``<trace>.start`` is written when run() starts, ``<trace>.done``
        #: (the time) when it returns.
        trace = fields.String(required=True)
        seconds = fields.Float(load_default=30.0)
        #: progress: set_completeness in a loop; sleep: no progress call;
        #: swallow: progress calls inside ``except Exception``; stuck:
        #: swallows every exception, BaseException included; requeue: sleep,
        #: then NO_RESULT.
        mode = fields.String(load_default="progress")

    def run(self) -> Any:
        super().run()
        with open(f"{self.trace}.start", "a") as f:
            f.write(f"{os.getpid()}\n")
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            if self.mode == "progress":
                self.set_completeness(self.completeness + 0.001)
                time.sleep(0.01)
            elif self.mode == "swallow":
                try:
                    self.set_completeness(self.completeness + 0.001)
                    time.sleep(0.01)
                except Exception:
                    pass
            elif self.mode == "stuck":
                try:
                    time.sleep(0.05)
                except BaseException:
                    pass
            else:
                time.sleep(max(0.0, end - time.monotonic()))
        with open(f"{self.trace}.done", "w") as f:
            f.write(repr(time.time()))
        return NO_RESULT if self.mode == "requeue" else 200


class BackoffJob(TestRoot):
    NAME = "Backoff"
    LEAF_NAME = "backoff"
    DESCRIPTION = "fails every run in the way `how` says; retries back off"
    RETRY_DELAY = 5
    RETRY_BACKOFF = 2
    RETRY_MAX_DELAY = 600
    MAX_ERRORS = 5

    class Params(Schema):
        #: raise: an exception; error_continue, warning_continue: the interrupts.
        how = fields.String(load_default="raise")

    def run(self) -> Any:
        super().run()
        if self.how == "raise":
            raise RuntimeError(f"boom {self.runs}")
        getattr(self, f"raise_{self.how}")(503, f"{self.how} {self.runs}")


class TimeoutJob(TestRoot):
    NAME = "Timeout"
    LEAF_NAME = "timeout"
    DESCRIPTION = "runs `seconds` in the way `mode` says, past its TIMEOUT"
    TIMEOUT = 0.3
    RETRY_DELAY = 0

    class Params(Schema):
        #: sleep: time.sleep; spin: a loop without progress calls; progress:
        #: set_completeness in a loop; swallow: a loop that swallows every
        #: exception, BaseException included; catch: returns 201 once
        #: stopped; cancel: requests its own cancellation once stopped.
        mode = fields.String(load_default="sleep")
        seconds = fields.Float(load_default=3600.0)
        #: None: ZeroG's continue_running(); else the code it ends the job
        #: with once ``max_errors`` errors are recorded.
        final = fields.Integer(load_default=None, allow_none=True)
        max_errors = fields.Integer(load_default=3)

    def run(self) -> Any:
        super().run()
        end = time.monotonic() + self.seconds
        try:
            if self.mode in ("sleep", "catch", "cancel"):
                time.sleep(self.seconds)
            while time.monotonic() < end:
                if self.mode == "progress":
                    self.set_completeness(self.completeness + 0.001)
                    time.sleep(0.01)
                elif self.mode == "swallow":
                    try:
                        time.sleep(0.05)
                    except BaseException:
                        pass
        except JobTimedOut:
            if self.mode == "catch":
                return 201
            if self.mode == "cancel":
                request_cancel(self.datastore, self.uuid)
            raise
        return 200

    def continue_running(self) -> int:
        if self.final is None:
            return super().continue_running()
        return self.final if self.errorCount >= self.max_errors else NO_RESULT


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


#: Values no job document holds, and run() results no worker takes.
BAD_VALUES: dict[str, Any] = {
    "nan": lambda: float("nan"),
    "inf": lambda: float("inf"),
    "set": lambda: {1, 2},
    "bytes": lambda: b"\x00bytes",
    "object": object,
    "deep": lambda: _nested(5000),
    "nul": lambda: "a \x00 b",
    "surrogate": lambda: "half \udc80",
    "huge": lambda: 2.5e300,
    "big_code": lambda: 2**31,
    "small_code": lambda: -(2**31) - 1,
    "nan_delay": lambda: (NO_RESULT, float("nan")),
    "inf_delay": lambda: (NO_RESULT, float("inf")),
    "huge_delay": lambda: (NO_RESULT, 1e300),
}


class PayloadSchema(CountingSchema):
    payload = fields.Raw(allow_none=True)


class StoresJob(TestRoot):
    NAME = "Stores"
    LEAF_NAME = "stores"
    DESCRIPTION = "stores or returns a BAD_VALUES `kind` in the way `how` says"
    BASE_SCHEMA = PayloadSchema

    class Params(Schema):
        kind = fields.String(required=True)
        #: update_attrs: saves it; assign: sets it, returns 200; requeue:
        #: sets it, returns NO_RESULT; raise: sets it, raises an exception
        #: quoting it; return: returns it from run().
        how = fields.String(load_default="update_attrs")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if "payload" in kwargs:
            self.payload = kwargs["payload"]

    def run(self) -> Any:
        super().run()
        value = BAD_VALUES[self.kind]()
        if self.how == "return":
            return value
        if self.how == "update_attrs":
            self.update_attrs(payload=value)
            return 200
        self.payload = value
        if self.how == "raise":
            raise RuntimeError(f"failed with {value}")
        return NO_RESULT if self.how == "requeue" else 200
