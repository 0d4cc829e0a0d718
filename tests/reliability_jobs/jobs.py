"""The job the reliability tests run in worker processes.

Each run and each final result is journaled, one line per event, to an
``O_APPEND`` file named in the job's parameters: a write of one short line
with ``O_APPEND`` is atomic, so processes killed at any moment never tear
or interleave lines, and the test reads exactly what every process did.
"""
from __future__ import annotations

import os
import time
from typing import Any

from marshmallow import Schema, fields

from flask_spacewalk import BaseJob


def journal(path: str, event: str, uuid: str) -> None:
    """Append ``<event> <uuid> <pid>`` to ``path`` in one write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{event} {uuid} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def read_journal(path: str) -> dict[str, dict[str, list[int]]]:
    """``{event: {uuid: [pid, ...]}}`` from a journal (empty if none)."""
    events: dict[str, dict[str, list[int]]] = {"run": {}, "result": {}}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return events
    for line in lines:
        event, uuid, pid = line.split()
        events.setdefault(event, {}).setdefault(uuid, []).append(int(pid))
    return events


class ReliabilityRoot(BaseJob):
    NAME = "Reliability tests"
    BRANCH_NAME = "rel"
    DESCRIPTION = "jobs for the reliability tests"


class ProgressJob(ReliabilityRoot):
    NAME = "Progress"
    LEAF_NAME = "progress"
    DESCRIPTION = "reports progress `steps` times, pausing `pause` s before each report"

    class Params(Schema):
        journal = fields.String(required=True)
        steps = fields.Integer(load_default=4)
        pause = fields.Float(load_default=0.0)

    def run(self) -> Any:
        journal(self.journal, "run", self.uuid)
        for step in range(self.steps):
            if self.pause:
                time.sleep(self.pause)
            self.set_completeness((step + 1) / self.steps)
        return 200

    def record_result(self, resultCode: int) -> None:
        # After the save: a line means the final result was written.
        super().record_result(resultCode)
        journal(self.journal, "result", self.uuid)
