"""Sending webhook deliveries: :class:`DeliverySender`, a thread beside a
worker's loop (like its heartbeat), or in the app's process when jobs run
inline.

The sender claims one due delivery at a time with a lease
(:data:`LEASE`): a sender killed while it sends leaves the delivery
claimed, and another takes it when the lease runs out, with the same
``webhook-id``. Each attempt is a POST signed with ``standardwebhooks``
(``webhook-id``, ``webhook-timestamp`` of the attempt, ``webhook-signature``
over ``id.timestamp.body``), answered within :data:`SEND_TIMEOUT` seconds;
a 2xx delivers it, anything else (another status, a redirect, a timeout, a
refused connection) schedules the next try after :data:`BACKOFF`'s delay
with jitter, and the last failure marks it failed. Every attempt is
recorded on the delivery (time, status code or error, duration).
"""
from __future__ import annotations

import datetime
import logging
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from standardwebhooks import Webhook as Signer

from ..errors import NotSupported, SpacewalkError
from .webhooks import Delivery, DeliveryStatus, Webhook

if TYPE_CHECKING:
    from .protocols import SpacewalkDatastore

__all__ = ["BACKOFF", "LEASE", "SEND_TIMEOUT", "DeliverySender", "send_once"]

log = logging.getLogger(__name__)

#: Seconds before each next try after a failed attempt (then jitter of
#: :data:`JITTER`); past the last one the delivery is failed: 8 attempts
#: over about an hour and ten minutes.
BACKOFF: tuple[float, ...] = (5.0, 30.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
#: The fraction of a delay added or taken at random, so that the retries
#: of many deliveries to one receiver that was down spread out.
JITTER = 0.2
#: Seconds an attempt waits for the receiver's answer.
SEND_TIMEOUT = 10.0
#: Seconds a claim holds a delivery: past the longest attempt, so that only
#: a sender that died loses it.
LEASE = SEND_TIMEOUT + 20.0
#: Seconds between two looks for due deliveries when none was due.
POLL = 1.0
#: Longest wait, when the sender stops, for an attempt under way.
STOP_WAIT = SEND_TIMEOUT + 1.0
#: Characters of an error kept on an attempt.
ERROR_CHARS = 300
#: Seconds a delivered or failed delivery stays in the delivery log.
KEEP = 7 * 86400.0
#: Seconds between two purges of the log by one sender, and deliveries
#: deleted at most by one.
PURGE_INTERVAL, PURGE_BATCH = 3600.0, 1000


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a 2xx: the receiver's URL is wrong."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def send_once(delivery: Delivery, hook: Webhook, timeout: float) -> tuple[int | None, str | None]:
    """POST ``delivery`` to ``hook`` once, signed: the status code of the
    answer (None when there was none) and the error, if any."""
    now = datetime.datetime.now(datetime.timezone.utc)
    signature = Signer(hook.secret).sign(delivery.id, now, delivery.body)
    request = urllib.request.Request(
        hook.url,
        data=delivery.body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "flask-spacewalk-webhooks",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        },
    )
    try:
        with _opener.open(request, timeout=timeout) as answer:
            answer.read(65536)
            return answer.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return None, f"{type(reason).__name__}: {reason}"[:ERROR_CHARS]


class DeliverySender:
    """Sends due deliveries from a thread of its own until stopped.

    :param datastore: the delivery store.
    :param webhooks: the endpoints, whose secrets sign the deliveries.
    """

    def __init__(self, datastore: SpacewalkDatastore, webhooks: Sequence[Webhook]):
        self.datastore = datastore
        self.hooks = {hook.url: hook for hook in webhooks}
        self.token = secrets.token_hex(8)
        # read when made: tests shorten them
        self.backoff, self.lease, self.timeout, self.poll = BACKOFF, LEASE, SEND_TIMEOUT, POLL
        self._next_purge = time.monotonic() + random.uniform(0, PURGE_INTERVAL)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="spacewalk-webhooks",
                                            daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Look for due deliveries now (new ones were recorded)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread, waiting a bounded time for an attempt under way
        (one cut short is claimed again after its lease)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._purge()
                sent = self.send_due()
            except NotSupported as exc:
                log.error("webhooks: no delivery can be sent: %s", exc)
                return
            except SpacewalkError as exc:
                log.warning("webhooks: cannot read due deliveries: %s", exc)
                sent = 0
            except Exception:  # the thread must outlive any bug in one send
                log.exception("webhooks: delivery failed unexpectedly")
                sent = 0
            if not sent:
                self._wake.wait(self.poll)
                self._wake.clear()

    def _purge(self) -> None:
        """Drop the deliveries ended :data:`KEEP` seconds ago, at most once
        per :data:`PURGE_INTERVAL` (started at random, so that the workers
        of a fleet take turns)."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL
        gone = self.datastore.purge_deliveries(time.time() - KEEP, PURGE_BATCH)
        if gone:
            log.info("webhooks: %d old delivery(ies) purged from the log", gone)

    def send_due(self, limit: int = 100) -> int:
        """Claim and send due deliveries, one at a time, up to ``limit``;
        how many were attempted."""
        done = 0
        while done < limit and not self._stop.is_set():
            claimed = self.datastore.claim_deliveries(time.time(), self.lease, 1, self.token)
            if not claimed:
                break
            self.attempt(claimed[0])
            done += 1
        return done

    def attempt(self, delivery: Delivery) -> None:
        """Send a claimed delivery once and store what came of it."""
        hook = self.hooks.get(delivery.url)
        started = time.time()
        status: int | None
        error: str | None
        if hook is None:
            status, error = None, "the endpoint is no longer in SPACEWALK_WEBHOOKS"
        else:
            status, error = send_once(delivery, hook, self.timeout)
        duration = time.time() - started
        delivery.attempts.append({
            "at": datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "status": status,
            "error": error,
            "duration": round(duration, 3),
        })  # fmt: skip
        now = time.time()
        if status is not None and 200 <= status < 300:
            delivery.status, delivery.next_at, delivery.due_at = DeliveryStatus.DELIVERED, None, now
            log.info("webhook %s (%s of job %s) delivered to %s", delivery.id, delivery.event,
                     delivery.uuid, delivery.url)
        elif hook is not None and len(delivery.attempts) <= len(self.backoff):
            delay = self.backoff[len(delivery.attempts) - 1]
            delay *= 1 + random.uniform(-JITTER, JITTER)
            delivery.next_at = delivery.due_at = now + delay
            log.warning("webhook %s to %s: %s; next try in %.1f s", delivery.id, delivery.url,
                        error, delay)
        else:
            delivery.status, delivery.next_at, delivery.due_at = DeliveryStatus.FAILED, None, now
            log.error("webhook %s (%s of job %s) to %s failed after %d attempt(s): %s",
                      delivery.id, delivery.event, delivery.uuid, delivery.url,
                      len(delivery.attempts), error)
        delivery.claim = None
        if not self.datastore.save_delivery(delivery, self.token):
            log.warning("webhook %s: claimed by another sender meanwhile (lease ran out);"
                        " its attempt is not recorded", delivery.id)

