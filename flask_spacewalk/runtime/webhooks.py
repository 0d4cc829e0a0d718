"""Webhooks: what is sent when a job ends, and its durable delivery records
(SPEC section 9).

``SPACEWALK_WEBHOOKS`` lists endpoints (:class:`Webhook`). When a job ends
the lifecycle hands it to a :class:`WebhookRecorder`, which writes one
:class:`Delivery` per endpoint whose ``events`` include the job's status
event into the datastore's delivery store
(:class:`~flask_spacewalk.runtime.protocols.DeliveryStore`): queued work,
sent later by the delivery thread of a worker
(:mod:`~flask_spacewalk.runtime.delivery`). A delivery's id is its
``webhook-id``: derived from the job's uuid, the cas of the save that ended
it and the endpoint, so that recording one end twice (the recovery of a
worker that died in between) writes it once, and a retried job that ends
again gets new ones. The body is fixed when the delivery is recorded and
sent unchanged on every attempt. Nothing here imports Flask.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NotSupported, SpacewalkError
from .records import utcnow
from .status import JobStatus

if TYPE_CHECKING:
    from .job import RuntimeJob
    from .protocols import Datastore

__all__ = [
    "EVENTS",
    "Delivery",
    "DeliveryStatus",
    "Webhook",
    "WebhookRecorder",
    "delivery_id",
    "parse_webhooks",
    "retried",
]

log = logging.getLogger(__name__)

#: The event of each status a job ends with.
EVENTS: dict[JobStatus, str] = {
    JobStatus.FINISHED: "job.finished",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}
_SECRET_PREFIX = "whsec_"


class DeliveryStatus:
    """Where a delivery stands."""

    #: Not yet answered with a 2xx; sent when due.
    PENDING = "pending"
    #: A 2xx came back.
    DELIVERED = "delivered"
    #: Every attempt of the schedule failed; only a retry by hand sends it.
    FAILED = "failed"

    ALL = (PENDING, DELIVERED, FAILED)


@dataclass(frozen=True)
class Webhook:
    """One endpoint of ``SPACEWALK_WEBHOOKS``.

    :param url: where the POST goes (http or https).
    :param secret: its Standard Webhooks secret, ``whsec_<base64>``; never
        shown (not in ``repr``, errors or logs).
    :param events: the events it receives.
    """

    url: str
    secret: str = field(repr=False)
    events: frozenset[str]


def parse_webhooks(value: Any) -> tuple[Webhook, ...]:
    """``SPACEWALK_WEBHOOKS`` as the config (a list of dicts) or the
    environment (its JSON text) gives it; None or ``""``: none.

    :raises ValueError: what is wrong, by entry, without the secret.
    """
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError("expected a list of {\"url\", \"secret\", \"events\"} objects")
    return tuple(_webhook(i, entry) for i, entry in enumerate(value))


def _webhook(index: int, entry: Any) -> Webhook:
    if isinstance(entry, Webhook):  # checked already (init_app wrote it back)
        return entry
    where = f"entry {index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object with url, secret and events")
    unknown = sorted(set(entry) - {"url", "secret", "events"})
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
    url = entry.get("url")
    if not isinstance(url, str):
        raise ValueError(f"{where}: url must be a string")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: url {url!r} is not an http or https URL")
    secret = entry.get("secret")
    if not isinstance(secret, str) or not secret.startswith(_SECRET_PREFIX):
        raise ValueError(f"{where}: secret must be a Standard Webhooks secret, whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(_SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: secret is not base64 after whsec_") from None
    if len(key) < 16:
        raise ValueError(f"{where}: secret must hold at least 16 bytes (24 to 64 are usual)")
    events = entry.get("events")
    if not isinstance(events, (list, tuple)) or not events:
        known = ", ".join(EVENTS.values())
        raise ValueError(f"{where}: events must be a non-empty list of {known}")
    wrong = [event for event in events if event not in EVENTS.values()]
    if wrong:
        raise ValueError(f"{where}: unknown event(s) {', '.join(map(repr, wrong))}; "
                         f"known: {', '.join(EVENTS.values())}")
    return Webhook(url, secret, frozenset(events))


def delivery_id(uuid: str, cas: Any, url: str) -> str:
    """The ``webhook-id`` of a job end at an endpoint: the same for the
    same end, another for the next end of a retried job."""
    digest = hashlib.sha256(f"{uuid}\n{cas}\n{url}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


@dataclass
class Delivery:
    """One job end to send to one endpoint, and the attempts made so far.

    :param id: the ``webhook-id``.
    :param body: the JSON text POSTed, the same on every attempt.
    :param due_at: when it may be claimed next (seconds since the epoch):
        its next try, or the end of a claim's lease.
    :param next_at: its next try as scheduled (the delivery log shows it).
    :param attempts: ``{"at", "status", "error", "duration"}`` each.
    :param claim: the token of the sender that holds it, if any.
    """

    id: str
    url: str
    event: str
    uuid: str
    body: str
    created_at: float
    due_at: float
    next_at: float | None
    status: str = DeliveryStatus.PENDING
    attempts: list[dict[str, Any]] = field(default_factory=list)
    claim: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The delivery as a JSON object, as the stores keep it."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Delivery:
        fields: dict[str, Any] = {name: record[name] for name in _FIELDS if name in record}
        return cls(**fields)

    def to_text(self) -> str:
        return json.dumps(self.to_record(), separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str | bytes) -> Delivery:
        return cls.from_record(json.loads(text))


_FIELDS = tuple(Delivery.__dataclass_fields__)


def retried(delivery: Delivery, now: float) -> Delivery:
    """``delivery`` made due at ``now`` again, unclaimed (a retry by hand)."""
    delivery.status, delivery.due_at, delivery.next_at = DeliveryStatus.PENDING, now, now
    delivery.claim = None
    return delivery


class WebhookRecorder:
    """Records the deliveries of each job end (the lifecycle calls
    :meth:`job_ended` after the job's end is saved).

    :param webhooks: the endpoints.
    :param progress_root: a jobType's tree root path (prefix included), for
        the body's ``progress``; None when unknown (``progress`` is then null).
    :param on_record: called after deliveries were recorded (the app of an
        inline run starts its sender thread there).
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        progress_root: Callable[[str], str | None] = lambda job_type: None,
        on_record: Callable[[], None] | None = None,
    ):
        self.webhooks = tuple(webhooks)
        self.progress_root = progress_root
        self.on_record = on_record

    def deliveries(
        self, job: RuntimeJob, now: float | None = None, cas: int | None = None
    ) -> list[Delivery]:
        """The deliveries of ``job``'s end, one per endpoint that wants its
        event; none for a job that has not ended.

        :param cas: the cas of the document that stores the end, when
            ``job.cas`` is not it yet (a save in a transaction of the
            lifecycle); it makes the webhook-id.
        """
        event = EVENTS.get(JobStatus.of({"resultCode": job.resultCode}))
        if event is None:
            return []
        now = time.time() if now is None else now
        root = self.progress_root(job.jobType)
        body = json.dumps({
            "type": event,
            "timestamp": utcnow().isoformat(timespec="milliseconds") + "Z",
            "data": {
                "uuid": job.uuid,
                "jobType": job.jobType,
                "status": JobStatus.of({"resultCode": job.resultCode}).value,
                "result": job.resultCode,
                "completeness": job.completeness,
                "progress": None if root is None else f"{root}/progress/{job.uuid}",
            },
        }, separators=(",", ":"))  # fmt: skip
        cas = job.cas if cas is None else cas
        return [
            Delivery(delivery_id(job.uuid, cas, hook.url), hook.url, event, job.uuid, body,
                     created_at=now, due_at=now, next_at=now)
            for hook in self.webhooks if event in hook.events
        ]  # fmt: skip

    def job_ended(self, datastore: Datastore, job: RuntimeJob) -> None:
        """Record the deliveries of ``job``'s end, once per webhook-id.

        :raises SpacewalkError: they could not be written (the caller keeps
            the job's queue entry, whose next holder records them).
        """
        found = self.deliveries(job)
        if not found:
            return
        try:
            added = datastore.add_deliveries(found)  # type: ignore[attr-defined]
        except NotSupported as exc:
            log.error("job %s: no webhook delivery recorded: %s", job.uuid, exc)
            return
        except SpacewalkError:
            raise
        if added:
            log.info("job %s: %d webhook delivery(ies) recorded", job.uuid, added)
        if self.on_record is not None:
            self.on_record()
