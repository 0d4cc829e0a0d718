"""ZeroG-style runtime jobs, for the standalone worker."""
from flask_spacewalk.runtime.job import RuntimeJob


class PlainJob(RuntimeJob):
    JOB_TYPE = "plain"

    def run(self):
        return 200


class AbstractPlain(RuntimeJob):
    JOB_TYPE = "abstract_plain"


class NoType(RuntimeJob):
    def run(self):
        return 200
