"""POST bodies built to give a message per item, at 100 KB, 500 KB and 1 MiB.

Run ``python benchmarks/validation_bench.py``. Each hostile shape is POSTed
through Flask's test client to a leaf whose Params has a ``Raw``, a
``List``, a nested ``List`` and a ``Dict`` field, so the door
(``read_json_body``) and the validation (``ParamsValidator``) both run; the
answer is 422 with at most 20 messages a field. Time linear in the body's
size shows as a per-MB figure that stays flat across the sizes; the
quadratic message bookkeeping this replaced took 30 s for 540 KB.

Each figure is the best of ``BENCH_VALIDATION_ROUNDS`` (default 3) POSTs.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from marshmallow import Schema, fields, validate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_spacewalk import BaseJob, Spacewalk  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_VALIDATION_ROUNDS", "3"))
SIZES = (100_000, 500_000, 1_000_000)


class Point(Schema):
    x = fields.Integer(required=True)


class BenchRoot(BaseJob):
    NAME = "Validation bench"
    DESCRIPTION = "One leaf with bodies to check"
    BRANCH_NAME = "bench"


class Check(BenchRoot):
    NAME = "Check"
    DESCRIPTION = "Fields that hostile bodies fill with bad items"
    LEAF_NAME = "check"

    class Params(Schema):
        anything = fields.Raw()
        tags = fields.List(fields.String(validate=validate.Length(max=3)))
        points = fields.List(fields.Nested(Point))
        scores = fields.Dict(keys=fields.String(), values=fields.Float())

    def run(self) -> int:
        return 200


def shapes() -> dict[str, Callable[[int], bytes]]:
    """Hostile bodies by name: each a function of the size in bytes."""

    def infinities(size: int) -> bytes:
        return b", ".join([b"1e999"] * (size // 7))

    def encoded(make: Callable[[int], Any]) -> Callable[[int], bytes]:
        return lambda size: json.dumps(make(size)).encode()

    return {
        "non-finite items": lambda size: b'{"anything": [' + infinities(size) + b"]}",
        "unknown keys": encoded(lambda size: {f"k{i}": 1 for i in range(size // 14)}),
        "bad list items": encoded(lambda size: {"tags": ["toolong"] * (size // 11)}),
        "bad nested items": encoded(lambda size: {"points": [{"x": "a", "z": 1}] * (size // 20)}),
        "bad mapping values": encoded(
            lambda size: {"scores": {f"k{i}": "x" for i in range(size // 16)}}
        ),
        "deeply nested": lambda size: (
            b'{"anything": ' + b"[" * 90 + infinities(size) + b"]" * 90 + b"}"
        ),
    }


def best_seconds(post: Callable[[bytes], Any], body: bytes) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        response = post(body)
        best = min(best, time.perf_counter() - start)
        assert response.status_code == 422, response.get_data(as_text=True)[:200]
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = Flask(__name__, instance_path=tmp)
        app.config["SPACEWALK_DATASTORE_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
        app.config["SPACEWALK_MAX_CONTENT_LENGTH"] = 1 << 20
        Spacewalk(app, __name__, BenchRoot)
        client = app.test_client()

        def post(body: bytes) -> Any:
            return client.post("/bench/check/job", data=body, content_type="application/json")

        print(f"{'shape':<20}" + "".join(f"{f'{size // 1000} KB':>20}" for size in SIZES))
        for name, make in shapes().items():
            cells = []
            for size in SIZES:
                body = make(size)
                seconds = best_seconds(post, body)
                cells.append(f"{seconds:5.2f} s ({seconds / len(body) * 1e6:4.2f} s/MB)")
            print(f"{name:<20}" + "".join(f"{cell:>20}" for cell in cells))


if __name__ == "__main__":
    main()
