"""Defaults shared by the web layer, the standalone worker, the runtime and
the backends, each written once.

Plain constants that import nothing, so that ``runtime/`` and ``backends/``
use them without depending on the configuration machinery
(:mod:`flask_spacewalk.settings` holds the table of ``SPACEWALK_*`` keys).
"""
from __future__ import annotations

#: ``SPACEWALK_SERVICE_NAME``: the queue is ``<service>_jobs``.
SERVICE_NAME = "spacewalk"
#: ``SPACEWALK_DATASTORE_URL``: relative to the instance folder.
DATASTORE_URL = "sqlite:///spacewalk.sqlite3"
#: The instance folder of a Flask app beside its module, which the
#: standalone worker takes from the working directory.
INSTANCE_FOLDER = "instance"
#: ``SPACEWALK_MAX_CONTENT_LENGTH``: 1 MiB.
MAX_CONTENT_LENGTH = 1024 * 1024
#: ``SPACEWALK_JOB_TTR``: seconds of lease on a reserved queue entry.
JOB_TTR = 30
#: ``SPACEWALK_CANCEL_GRACE``: seconds a cancelled job has to reach a
#: progress call before its worker stops it by force.
CANCEL_GRACE = 10
#: ``SPACEWALK_IDEMPOTENCY_TTL``: seconds an ``Idempotency-Key`` of
#: ``POST L/job`` is remembered (one day).
IDEMPOTENCY_TTL = 86_400
#: ``SPACEWALK_HEARTBEAT``: seconds between two writes of a worker's record,
#: and between its looks at whether its queue is paused.
HEARTBEAT = 5
#: Seconds a running job may take to finish after SIGTERM (``--grace``).
SHUTDOWN_GRACE = 30
#: ``SPACEWALK_API_VERSION``: ``info.version`` of the OpenAPI document.
API_VERSION = "1"
#: ``SPACEWALK_MAX_WAIT``: the most seconds a ``Prefer: wait=N`` request
#: holds its answer (SPEC section 9).
MAX_WAIT = 30
#: ``SPACEWALK_STREAM_MAX``: seconds after which the server ends an event
#: stream, for the client to resume (SPEC section 9).
STREAM_MAX = 300
