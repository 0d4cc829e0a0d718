"""The operator's side of the worker records: list the live workers, and
drain, undrain or retire one of them or every one of a host (SPEC section 8).

A request is a datastore key the worker reads at its next beat
(:mod:`.heartbeat`); so it takes effect within one heartbeat, on every
backend and across hosts, and the worker's record shows it from then on.
"""
from __future__ import annotations

import datetime
import enum
from typing import Any

from .heartbeat import PUBLIC_FIELDS, WorkerState, drain_key, is_live, retire_key
from .protocols import SpacewalkDatastore
from .records import utcnow


class WorkerAction(str, enum.Enum):
    """What an operator may ask of a worker."""

    #: Finish the current job, then take no other until undrained.
    DRAIN = "drain"
    #: Take jobs again (a retiring worker still exits).
    UNDRAIN = "undrain"
    #: Finish the current job, then exit; the supervisor starts no other.
    RETIRE = "retire"

    def __str__(self) -> str:
        return self.value


def live_workers(
    datastore: SpacewalkDatastore, now: datetime.datetime | None = None
) -> list[dict[str, Any]]:
    """The records of the workers seen within their last three heartbeats,
    by host, then start time; only the fields ``GET R/workers`` answers.

    :raises NotSupported: the datastore keeps no worker records.
    """
    now = utcnow() if now is None else now
    records = [record for record in datastore.list_workers() if is_live(record, now)]
    records.sort(key=lambda r: (str(r.get("host")), str(r.get("startedAt")), str(r.get("id"))))
    return [{name: record.get(name) for name in PUBLIC_FIELDS} for record in records]


def find_worker(datastore: SpacewalkDatastore, worker_id: str) -> dict[str, Any] | None:
    """The live worker ``worker_id``'s record, or None."""
    for record in live_workers(datastore):
        if record["id"] == worker_id:
            return record
    return None


def request_action(
    datastore: SpacewalkDatastore, record: dict[str, Any], action: WorkerAction
) -> WorkerState:
    """Ask the worker of ``record`` to ``action``; the state it moves to.

    Undrain deletes the drain request only: a retiring worker stays
    retiring, and is what undrain answers for it.
    """
    worker_id = record["id"]
    retiring = record["state"] == WorkerState.RETIRING.value
    if action is WorkerAction.RETIRE:
        datastore.set(retire_key(worker_id), _request(action))
        return WorkerState.RETIRING
    if action is WorkerAction.DRAIN:
        datastore.set(drain_key(worker_id), _request(action))
        return WorkerState.RETIRING if retiring else WorkerState.DRAINING
    datastore.delete(drain_key(worker_id))
    if retiring:
        return WorkerState.RETIRING
    return WorkerState.IDLE if record["job"] is None else WorkerState.RUNNING


def request_for_host(
    datastore: SpacewalkDatastore, host: str, action: WorkerAction
) -> list[tuple[str, WorkerState]]:
    """Ask every live worker on ``host`` to ``action``; each one's id and
    the state it moves to (none when the host has no live worker)."""
    return [
        (record["id"], request_action(datastore, record, action))
        for record in live_workers(datastore)
        if record["host"] == host
    ]


def _request(action: WorkerAction) -> dict[str, str]:
    return {"action": action.value, "requestedAt": utcnow().isoformat()}
