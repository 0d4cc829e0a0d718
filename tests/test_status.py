"""The status rule and the listing's entry of a document (runtime/status.py)."""
from __future__ import annotations

from typing import Any

import pytest

from flask_spacewalk.runtime import cancel
from flask_spacewalk.runtime.job import make_key
from flask_spacewalk.runtime.query import JobQuery, job_summary
from flask_spacewalk.runtime.status import (
    CANCELLED_CODE,
    JOB_KEY_PREFIX,
    STATUSES,
    JobIndex,
    JobStatus,
    job_index,
)

UUID = "0b3c3a53-9f3e-4f7c-8d2a-0a4c1f2e3d4b"


@pytest.mark.parametrize(
    ("document", "status"),
    [
        ({"resultCode": -1}, "queued"),
        ({"resultCode": -1, "running": False}, "queued"),
        ({"resultCode": -1, "running": 1}, "queued"),  # only true is running
        ({"resultCode": -1.0, "running": True}, "running"),
        ({"resultCode": -1, "running": True}, "running"),
        ({"resultCode": 0}, "finished"),
        ({"resultCode": 200, "running": True}, "finished"),
        ({"resultCode": 399}, "finished"),
        ({"resultCode": 399.5}, "finished"),
        ({"resultCode": 400}, "failed"),
        ({"resultCode": 410}, "cancelled"),
        ({"resultCode": 410.0, "running": True}, "cancelled"),
        ({"resultCode": 410.5}, "failed"),
        ({"resultCode": 500}, "failed"),
        ({"resultCode": -2}, "failed"),
        ({"resultCode": 2**70}, "failed"),
        ({"resultCode": "200"}, "failed"),
        ({"resultCode": "410"}, "failed"),
        ({"resultCode": True}, "failed"),
        ({"resultCode": None}, "failed"),
        ({"resultCode": float("nan")}, "failed"),
        ({}, "failed"),
        ("a str", "failed"),
        (None, "failed"),
        ([{"resultCode": -1}], "failed"),
    ],
)
def test_status_of(document: Any, status: str) -> None:
    found = JobStatus.of(document)
    assert found is JobStatus(status)
    assert found == status and str(found) == status and f"{found}" == status


def test_the_vocabulary_is_spec_sections_3() -> None:
    assert STATUSES == ("queued", "running", "finished", "cancelled", "failed")
    assert [s.value for s in JobStatus] == list(STATUSES)


def test_cancel_records_the_code_that_reads_cancelled() -> None:
    assert cancel.CANCELLED == CANCELLED_CODE == 410
    assert JobStatus.of({"resultCode": cancel.CANCELLED}) is JobStatus.CANCELLED


def test_job_keys_have_one_prefix() -> None:
    assert make_key(UUID) == JOB_KEY_PREFIX + UUID == f"zerog_job_{UUID}"


DOC = {"jobType": "a", "createdAt": "2024-05-01T12:00:00", "resultCode": 410}


@pytest.mark.parametrize(
    ("key", "value", "index"),
    [
        (make_key(UUID), DOC, JobIndex("a", "2024-05-01T12:00:00", JobStatus.CANCELLED)),
        (make_key("a"), {**DOC, "resultCode": -1, "running": True},
         JobIndex("a", "2024-05-01T12:00:00", JobStatus.RUNNING)),
        (make_key(UUID), {**DOC, "jobType": 7},
         JobIndex(None, "2024-05-01T12:00:00", JobStatus.CANCELLED)),
        (make_key(UUID), {"createdAt": "x"}, JobIndex(None, "x", JobStatus.FAILED)),
        # not a job document: not listed
        (make_key(UUID), {**DOC, "createdAt": None}, None),
        (make_key(UUID), {"jobType": "a", "resultCode": -1}, None),
        (make_key(UUID), {**DOC, "createdAt": 20240501}, None),
        (make_key(UUID), "a str", None),
        ("spacewalk_cancel_" + UUID, DOC, None),
        ("other", DOC, None),
        ("zerog_job", DOC, None),
        ("zerog_job_", DOC, None),
        ("zerog_job_a b", DOC, None),  # a space would split Redis's members
        ("zerog_job_a\n", DOC, None),
        ("zerog_job_é", DOC, None),
        ("zerog_job_" + "a" * 201, DOC, None),
        ("ZEROG_JOB_" + UUID, DOC, None),
    ],
)  # fmt: skip
def test_job_index(key: str, value: Any, index: JobIndex | None) -> None:
    assert job_index(key, value) == index


def test_job_query_takes_statuses_as_plain_words() -> None:
    query = JobQuery(statuses=frozenset({JobStatus.CANCELLED, "queued"}))
    assert query.statuses == {"cancelled", "queued"}
    assert all(type(status) is str for status in query.statuses)
    assert query.plan() == ("status", ("cancelled", "queued"))


def test_summary_status() -> None:
    summary = job_summary(UUID, dict(DOC))
    assert summary["status"] == "cancelled" and type(summary["status"]) is str
