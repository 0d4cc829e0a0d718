"""The Redis backend: a datastore and a queue on one Redis server (redis-py).

URL: ``redis://[[user]:password@]host[:port][/db][?prefix=P]``, where the
query may also set ``socket_timeout`` and ``socket_connect_timeout`` in
seconds (1 s each by default, so that a dead server is noticed quickly). Every
key starts with the prefix (``spacewalk:`` by default), so several services
can share a database; the datastore and the queue may share one prefix.

Keys, with ``P`` the prefix and ``N`` the queue name:

``P doc:<key>``
    A document: a hash with ``value`` (the JSON text) and ``cas``.
``P jobs:all``, ``P jobs:type:<jobType>``, ``P jobs:status:<status>``
    The job listing's indexes: sorted sets, every score 0, of the members
    ``<createdAt> <uuid>`` of the documents under ``zerog_job_<uuid>`` that
    have a ``createdAt`` string. Members of one score sort byte by byte, and
    a space sorts before any character of a timestamp, so a set's order is
    the listing's. The scripts that write and delete documents keep them up
    to date with the entry each write is given (computed in Python by
    :func:`~flask_spacewalk.runtime.status.job_index`), and remember a
    document's entry in its hash (``ix_member``, ``ix_type``,
    ``ix_status``) to move it when its status changes.
``P jobs:counts``
    The number of listed jobs by status and jobType: a hash of fields
    ``<status>:<jobType>``, which the same scripts keep with the sets; a
    document counted there has ``ix_counted`` in its hash. A field that falls
    to 0 stays, so a status's gauge does not vanish.
``P jobs:version``
    The version of those indexes (:data:`INDEX_VERSION`); a datastore
    migrates older ones when a process first uses it.
``P idempotency:<key>``
    An idempotency key record (:mod:`~flask_spacewalk.runtime.keyrecords`):
    its JSON text, set with ``SET NX`` and a real expiry (``PX``), so Redis
    deletes it when it expires.
``P workers``
    The worker records: a hash of each live worker's id to its record's
    JSON text (runtime/heartbeat.py).
``P job-writes``
    Not a key: the pub/sub channel on which each write of a job document
    publishes the job's uuid (:meth:`RedisDatastore.job_writes`).
``P queue:last-id``
    The counter of entry ids, shared by all queue names, as in beanstalkd.
``P queue:entry:<id>``
    An entry: a hash with ``tube``, ``body``, ``pri``, ``ttr``, ``delay``,
    ``created``, ``ready_at``, ``lease`` (only while reserved),
    ``reserves``, ``timeouts`` and ``releases``. Times are microseconds of
    the server's clock (``TIME``), so clients need not agree on the time.
``P queue:N:ready2``
    The ready entries: a sorted set scored by priority whose members are
    the time each entry became ready (its ``ready_at``) and its id, each
    zero-padded to 20 digits. Members of one score sort as text, so one
    priority goes in the order its entries became ready, then as put. The
    scripts find an entry's member from its hash.
``P queue:N:delayed``, ``P queue:N:leases``
    Sorted sets of entry ids (zero-padded to 20 digits) scored by the time
    the delay runs out and by the end of the lease.
``P queue:N:ready``
    The ready entries as versions before ``ready2`` kept them: ids alone,
    scored by priority (put order). Each reserve and ``stats_tube`` first
    moves any entry found there into ``ready2``, so entries stored by an
    older version, or made ready by one of its processes still running
    during an upgrade, are kept; the new name keeps such a process from
    misreading the new members (it would drop them).
``P queue:N:since``
    The ready entries' ids again, scored by the time each became ready: the
    age of the oldest over every priority is one read
    (:meth:`RedisQueue.queue_stats`). Every script that changes ``ready2``
    changes it too.
``P queue:names``
    The queue names that were given an entry (:meth:`RedisQueue.put` adds
    its name); :meth:`RedisQueue.queue_stats` lists those that hold one and
    forgets the others.
``P queue:N:wake``
    A list of wake-up tokens: :meth:`RedisQueue.put` and releases push one,
    and a blocked :meth:`RedisQueue.reserve` waits on it with ``BLPOP``.

Every change is one Lua script, so it is atomic on the server. A standalone
server (or a primary) of Redis 6.0 or later is needed; Redis Cluster is not
supported, because a script touches keys of several hash slots.

A queue and a datastore of one server and database share transactions with
the lifecycle (runtime/protocols.py ``SharedTransactions``), which are
optimistic: a claim script reserves entries and reads each one's job and
cancel request; what the lifecycle then writes (the job marked running; a
result with its webhook deliveries and the entry's deletion) is one commit
script, which writes nothing unless every document read is unchanged and
every entry still held. A no-op job costs three round trips: claim, mark
running, commit the result; in a batch (``--batch N``) about one, the
commit of each result marking the next job running as the claim read it.
The commit's writes are the write script's own code (``write_doc``: the
listing's indexes, the job-write notification); their cas is chosen by the
client, as the SQLite store's, ``max(time in ns, cas + 1)``, so that the
webhook-id made from it is known before the commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.backoff
import redis.exceptions
import redis.retry

from .. import defaults, errors
from ..runtime.cancel import cancel_key
from ..runtime.keyrecords import KeyRecord
from ..runtime.protocols import JobDeletion, QueueDepth, QueueEntry, StoreTransaction, Value
from ..runtime.query import JobQuery, newest_first
from ..runtime.status import JOB_KEY_PREFIX, JobIndex, JobStatus, job_index
from ..runtime.webhooks import Delivery, DeliveryStatus, retried
from . import _redact
from ._fork import abandon, track
from .base import (
    BaseQueue,
    CasDatastore,
    HeldEntry,
    check_count,
    check_priority,
    encode_value,
    lease_seconds,
    same_body,
    wait_for_entries,
)
from .write_listener import WriteListener

__all__ = ["RedisDatastore", "RedisQueue", "RedisQueueEntry", "check_url"]

T = TypeVar("T")
#: The keys of cancel requests (runtime/cancel.py).
_CANCEL_PREFIX = cancel_key("")

#: The default of a URL's ``socket_timeout`` and ``socket_connect_timeout``.
SOCKET_TIMEOUT = 1.0
#: Longest ``BLPOP`` of a blocked ``reserve`` between two looks at the queue.
WAKE_FALLBACK = 1.0
#: Most wake-up tokens kept for a queue name nobody waits on.
WAKE_TOKENS = 100
DEFAULT_PREFIX = "spacewalk:"
#: The version of the job listing's indexes, kept under ``P jobs:version``:
#: 2 lists result 410 as ``cancelled`` (it was ``failed``); 3 counts the
#: jobs by status and jobType (``P jobs:counts``).
INDEX_VERSION = 3
#: Deliveries, newest first, among which ``list_deliveries`` looks for
#: those of one status.
DELIVERY_SCAN = 10_000
#: Index members a migration reads at a time.
MIGRATION_BATCH = 500

_QUERY_KEYS = ("prefix", "socket_timeout", "socket_connect_timeout")
# Errors that mean the server cannot be used now; the next call reconnects.
_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
)
# The server's refusals that are no connection failure: OOM past maxmemory,
# MISCONF (a failed snapshot), BUSY (a long script), WRONGTYPE (a foreign
# key under our prefix), a bad DB index in the URL... Unavailable too, with
# the server's reason: the operator fixes the server, not the request. Any
# other error (a bug in our scripts, a value redis-py cannot send) stays
# loud, as PostgreSQL's do.
# (redis-py strips the word from the message of the errors it has a class
# for; the classes a redis-py release lacks are left out)
_REFUSED_CLASSES: tuple[type[Exception], ...] = tuple(
    cls
    for name in ("OutOfMemoryError", "BusyLoadingError", "MasterDownError",
                 "AuthenticationError", "AuthorizationError", "NoPermissionError",
                 "TryAgainError")  # fmt: skip
    if isinstance(cls := getattr(redis.exceptions, name, None), type)
)
#: The words a refusal starts with, also inside a script's error message.
_REFUSED_WORDS = re.compile(
    r"\b(OOM|MISCONF|BUSY|READONLY|WRONGTYPE|NOREPLICAS|MASTERDOWN|LOADING|NOAUTH"
    r"|WRONGPASS|NOPERM)\b|DB index is out of range|invalid DB index"
)


def _refused(exc: redis.exceptions.RedisError) -> bool:
    """Whether ``exc`` is the server refusing for a state of its own."""
    return isinstance(exc, _REFUSED_CLASSES) or (
        isinstance(exc, redis.exceptions.ResponseError)
        and _REFUSED_WORDS.search(str(exc)) is not None
    )


class _Settings(NamedTuple):
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    prefix: str
    socket_timeout: float
    socket_connect_timeout: float

    @property
    def server(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.db}"


def _parse_url(url: str) -> _Settings:
    def bad(reason: str) -> errors.ConfigurationError:
        return errors.ConfigurationError(f"Redis URL {_redact(url)!r} {reason}")

    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise bad(f"is malformed: {exc}") from None
    if parts.scheme.lower() != "redis":
        raise bad("must start with redis://")
    if parts.fragment:
        raise bad("takes no fragment")
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise bad("must name a database number, as in redis://host:6379/0")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _QUERY_KEYS or key in query:
            raise bad(f"has an unknown or repeated option {key!r}; known: {', '.join(_QUERY_KEYS)}")
        query[key] = value
    timeouts = []
    for key in ("socket_timeout", "socket_connect_timeout"):
        try:
            seconds = float(query.get(key, SOCKET_TIMEOUT))
        except ValueError:
            seconds = math.nan
        if not 0 < seconds < math.inf:
            raise bad(f"needs a positive number of seconds for {key}")
        timeouts.append(seconds)
    return _Settings(
        host=parts.hostname or "localhost",
        port=port,
        db=int(db_text),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        prefix=query.get("prefix", DEFAULT_PREFIX),
        socket_timeout=timeouts[0],
        socket_connect_timeout=timeouts[1],
    )


def check_url(url: str) -> None:
    """Check a ``redis://`` URL without connecting.

    :raise ConfigurationError: the URL is malformed or has unknown options.
    """
    _parse_url(url)


# -- Lua -----------------------------------------------------------------------

_PRELUDE = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- Lua's tostring() turns large numbers into 1.7e+15; keep every digit
local function int(x) return string.format('%.0f', x) end
local function member(id) return string.format('%020.0f', tonumber(id)) end
-- (a member's zeros stripped as text: cheaper than printf)
local function entry_key(base, m) return base .. string.match(m, '^0*(%d+)$') end
-- A ready entry's member: the time it became ready (digits, as its hash
-- holds it) padded to 20 digits, then its id member m. Padded as text:
-- printf's %f is the costliest step of these scripts.
local function ready_member(ready_at, m)
  return string.rep('0', 20 - #ready_at) .. ready_at .. m
end
local function wake(key)
  if redis.call('LLEN', key) < tonumber(WAKE_TOKENS) then
    redis.call('RPUSH', key, '1')
  end
end
-- The ready set N:ready2 has a twin N:since of ids scored by the time each
-- entry became ready (at, digits as the hash holds them): every change of
-- one is made to both.
local function since_key(ready) return string.sub(ready, 1, -7) .. 'since' end
local function make_ready(ready, m, pri, at)
  redis.call('ZADD', ready, pri, ready_member(at, m))
  redis.call('ZADD', since_key(ready), at, m)
end
-- Make ready the entries whose delay or lease ran out, and move those an
-- older version made ready (a batch at a time, so that a backlog cannot
-- stall the server).
local function promote(ready, delayed, leases, legacy, base, now)
  if redis.call('EXISTS', legacy) == 1 then
    for _, m in ipairs(redis.call('ZRANGE', legacy, 0, 999)) do
      local f = redis.call('HMGET', entry_key(base, m), 'pri', 'ready_at', 'lease')
      if f[1] and not f[3] then make_ready(ready, m, f[1], f[2]) end
      redis.call('ZREM', legacy, m)
    end
  end
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
  for _, m in ipairs(due) do
    local f = redis.call('HMGET', entry_key(base, m), 'pri', 'ready_at')
    if f[1] then make_ready(ready, m, f[1], f[2]) end
    redis.call('ZREM', delayed, m)
  end
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1000)
  for _, m in ipairs(expired) do
    local key = entry_key(base, m)
    local f = redis.call('HMGET', key, 'pri', 'lease')
    if f[1] and f[2] then
      redis.call('HDEL', key, 'lease')
      redis.call('HSET', key, 'ready_at', f[2])
      redis.call('HINCRBY', key, 'timeouts', 1)
      make_ready(ready, m, f[1], f[2])
    end
    redis.call('ZREM', leases, m)
  end
end
-- Move document doc's listing entry to (member, job_type, status); a nil
-- member takes it out of the listing. The job counts follow; a document
-- listed before they were kept (no ix_counted) is counted by the migration.
local function reindex(doc, base, member, job_type, status)
  local old = redis.call('HMGET', doc, 'ix_member', 'ix_type', 'ix_status', 'ix_counted')
  if old[1] == member and old[2] == job_type and old[3] == status then return end
  if old[1] then
    redis.call('ZREM', base .. 'all', old[1])
    redis.call('ZREM', base .. 'status:' .. old[3], old[1])
    if old[2] ~= '' then redis.call('ZREM', base .. 'type:' .. old[2], old[1]) end
    if old[4] then redis.call('HINCRBY', base .. 'counts', old[3] .. ':' .. old[2], -1) end
  end
  if not member then
    redis.call('HDEL', doc, 'ix_member', 'ix_type', 'ix_status', 'ix_counted')
    return
  end
  redis.call('ZADD', base .. 'all', 0, member)
  redis.call('ZADD', base .. 'status:' .. status, 0, member)
  if job_type ~= '' then redis.call('ZADD', base .. 'type:' .. job_type, 0, member) end
  redis.call('HINCRBY', base .. 'counts', status .. ':' .. job_type, 1)
  redis.call('HSET', doc, 'ix_member', member, 'ix_type', job_type, 'ix_status', status,
    'ix_counted', 1)
end
-- Write document doc: json its text, cas the one it must have ('' for
-- none), mode create, update or set; base the listing's index base and
-- (member, job_type, status) the document's listing entry as the caller
-- computed it (member '' when it is not listed). A job's write tells of
-- itself on channel ('' for none) with its uuid. new_cas is the cas to give
-- it ('' for max(server time in ns, old cas + 1); a caller's is above the
-- old one). Returns the new cas as text (it may not fit a Lua number), or
-- -2 when create finds the key, -1 for a stale cas, 0 when update finds no
-- key.
local function write_doc(doc, json, cas, mode, base, member, job_type, status, channel, uuid,
                         new_cas)
  local old = redis.call('HGET', doc, 'cas')
  if mode == 'create' then
    if redis.call('EXISTS', doc) == 1 then return -2 end
  elseif cas ~= '' then
    if old ~= cas then return -1 end
  elseif not old and mode == 'update' then
    return 0
  end
  reindex(doc, base, member ~= '' and member or nil, job_type, status)
  if new_cas ~= '' then
    redis.call('HSET', doc, 'value', json, 'cas', new_cas)
  else
    local t = redis.call('TIME')
    local now = t[1] .. string.format('%06d', tonumber(t[2])) .. '000'
    if not old or #now > #old or (#now == #old and now > old) then
      redis.call('HSET', doc, 'value', json, 'cas', now)
      new_cas = now
    else
      -- the clock did not move on (or went back): HINCRBY counts in 64 bits
      redis.call('HSET', doc, 'value', json)
      redis.call('HINCRBY', doc, 'cas', 1)
      new_cas = redis.call('HGET', doc, 'cas')
    end
  end
  if channel and channel ~= '' then redis.call('PUBLISH', channel, uuid) end
  return new_cas
end
-- The queue's keys as the entry scripts take them: ready, delayed, leases,
-- wake, legacy ready. Reserve the next ready entry (its delays promoted
-- already): {id, body, reserves, releases}, or nil when none is ready.
local function reserve_next(keys, base, now)
  while true do
    local first = redis.call('ZPOPMIN', keys[1])
    if #first == 0 then return nil end
    local m = string.sub(first[1], 21)
    local key = entry_key(base, m)
    redis.call('ZREM', since_key(keys[1]), m)
    local f = redis.call('HMGET', key, 'ttr', 'reserves', 'body', 'releases')
    if f[1] then
      local lease = now + tonumber(f[1])
      local reserves = tonumber(f[2]) + 1
      redis.call('HSET', key, 'lease', int(lease), 'reserves', int(reserves))
      redis.call('ZADD', keys[3], lease, m)
      return {tonumber(m), f[3], reserves, tonumber(f[4])}
    end
  end
end
-- pass the wake-up on: another waiter may take the next entry
local function pass_wake(keys)
  if redis.call('EXISTS', keys[1]) == 1 then wake(keys[4]) end
end
-- {0[, microseconds to the next delay or lease that runs out]}
local function nothing_ready(keys, now)
  -- nothing is ready, so any token is stale
  redis.call('DEL', keys[4])
  local next = false
  for _, set in ipairs({keys[2], keys[3]}) do
    local head = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if #head > 0 and (not next or tonumber(head[2]) < next) then
      next = tonumber(head[2])
    end
  end
  if not next then return {0} end
  return {0, math.max(next - now, 0)}
end
-- Delete, touch or release entry id (of keys, as reserve_next's) if its
-- reserves are still these and (unless releases is '') its releases too;
-- action delete, touch or release (after delay microseconds). Returns 1, or 0
-- when someone else reserved the entry since (or, with releases, the holder
-- released it) or it is gone.
local function entry_action(keys, base, id, reserves, releases, action, delay)
  local key = base .. id
  local m = member(id)
  local f = redis.call('HMGET', key, 'reserves', 'releases', 'pri', 'ttr', 'ready_at', 'lease')
  if f[1] ~= reserves or (releases ~= '' and f[2] ~= releases) then return 0 end
  if f[6] then
    -- reserved: in the leases set alone
    redis.call('ZREM', keys[3], m)
  else
    -- ready again (its lease ran out and nobody reserved it since), or
    -- delayed by a release
    redis.call('ZREM', keys[1], ready_member(f[5], m))
    redis.call('ZREM', since_key(keys[1]), m)
    redis.call('ZREM', keys[5], m)
    redis.call('ZREM', keys[2], m)
  end
  if action == 'delete' then
    redis.call('DEL', key)
    return 1
  end
  local now = now_us()
  if action == 'touch' then
    local lease = now + tonumber(f[4])
    redis.call('HSET', key, 'lease', int(lease))
    redis.call('ZADD', keys[3], lease, m)
    return 1
  end
  local wait = tonumber(delay)
  redis.call('HDEL', key, 'lease')
  local ready_at = int(now + wait)
  redis.call('HSET', key, 'ready_at', ready_at, 'delay', delay)
  redis.call('HINCRBY', key, 'releases', 1)
  if wait > 0 then
    redis.call('ZADD', keys[2], now + wait, m)
  else
    make_ready(keys[1], m, f[3], ready_at)
  end
  -- also for a delay: a waiter then looks again when to wake
  wake(keys[4])
  return 1
end
-- Webhook deliveries: keys records (hash id -> JSON), due (zset of pending
-- ids by due_at), created (zset by created_at), claims (hash id -> token);
-- args[first] the key prefix of the sets of each job's deliveries, then
-- for each delivery its id, due_at, created_at, uuid and JSON text, up to
-- the end of args. Stores those whose id is new; returns how many were.
local function add_deliveries(keys, args, first)
  local added = 0
  for i = first + 1, #args, 5 do
    local id = args[i]
    if redis.call('HSETNX', keys[1], id, args[i + 4]) == 1 then
      redis.call('ZADD', keys[2], args[i + 1], id)
      redis.call('ZADD', keys[3], args[i + 2], id)
      redis.call('SADD', args[first] .. args[i + 3], id)
      added = added + 1
    end
  end
  return added
end
""".replace("WAKE_TOKENS", str(WAKE_TOKENS))

# KEYS: doc. ARGV: write_doc's json to uuid (see the prelude).
_WRITE = """
return write_doc(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7],
  ARGV[8], ARGV[9], '')
"""

# KEYS: doc. ARGV: the listing's index base. Returns 1 when deleted.
_DELETE_DOC = """
reindex(KEYS[1], ARGV[1], nil)
return redis.call('DEL', KEYS[1])
"""

# ARGV: the listing's index base, the documents' key prefix, then for each
# job its key, the cas it was read with, its number of side keys and those
# keys (keys without the prefix). Deletes each job whose cas is still that
# one, with its side keys; returns the keys of those deleted.
_DELETE_JOBS = """
local base, prefix = ARGV[1], ARGV[2]
local deleted = {}
local i = 3
while i <= #ARGV do
  local doc, sides = prefix .. ARGV[i], tonumber(ARGV[i + 2])
  if redis.call('HGET', doc, 'cas') == ARGV[i + 1] then
    for j = 0, sides do
      local key = j == 0 and doc or prefix .. ARGV[i + 2 + j]
      reindex(key, base, nil)
      redis.call('DEL', key)
    end
    table.insert(deleted, ARGV[i])
  end
  i = i + 3 + sides
end
return deleted
"""

# KEYS: doc. ARGV: the listing's index base, the cas the entry was computed
# for, member, jobType and status (as _WRITE's). Returns 1 when moved, 0
# when the document changed meanwhile (its write indexed it).
_REINDEX = """
if redis.call('HGET', KEYS[1], 'cas') ~= ARGV[2] then return 0 end
reindex(KEYS[1], ARGV[1], ARGV[3] ~= '' and ARGV[3] or nil, ARGV[4], ARGV[5])
return 1
"""

# KEYS: documents listed before the counts were kept. ARGV: the listing's
# index base. Counts each that is listed and not counted yet.
_COUNT = """
for _, doc in ipairs(KEYS) do
  local f = redis.call('HMGET', doc, 'ix_member', 'ix_type', 'ix_status', 'ix_counted')
  if f[1] and not f[4] then
    redis.call('HINCRBY', ARGV[1] .. 'counts', f[3] .. ':' .. f[2], 1)
    redis.call('HSET', doc, 'ix_counted', 1)
  end
end
return 0
"""

# KEYS: the sets to read, newest first. ARGV: job documents' key prefix
# (the datastore's and the job key's), max and min
# (ZREVRANGEBYLEX's), limit, wanted jobTypes and statuses ('' for any, else
# each followed by a newline). Returns, for each set, a list of up to limit
# members and document texts, alternating, that pass the wanted sets.
_LIST = """
local function wanted(text)
  if text == '' then return nil end
  local set = {}
  for v in string.gmatch(text, '([^\\n]*)\\n') do set[v] = true end
  return set
end
local types, statuses = wanted(ARGV[5]), wanted(ARGV[6])
local limit = tonumber(ARGV[4])
local out = {}
for _, key in ipairs(KEYS) do
  local found, count, max = {}, 0, ARGV[2]
  while count < limit do
    local batch = redis.call('ZREVRANGEBYLEX', key, max, ARGV[3], 'LIMIT', 0, limit)
    for _, m in ipairs(batch) do
      local doc = ARGV[1] .. string.match(m, ' ([^ ]*)$')
      local f = redis.call('HMGET', doc, 'value', 'ix_type', 'ix_status')
      if f[1] and (not types or types[f[2]]) and (not statuses or statuses[f[3]]) then
        table.insert(found, m)
        table.insert(found, f[1])
        count = count + 1
        if count == limit then break end
      end
    end
    if #batch < limit then break end
    max = '(' .. batch[#batch]
  end
  table.insert(out, found)
end
return out
"""

# Idempotency key records. KEYS: the record. ARGV: its JSON text and
# milliseconds to its expiry. Returns false when stored, else the record
# that is there.
_CLAIM_KEY = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""

# KEYS: the record. ARGV: the token it must have, then (to replace it) the
# new JSON text and milliseconds to its expiry. Returns 1 when replaced or
# deleted, 0 when the record is gone or another claim's.
_REPLACE_KEY = """
local found = redis.call('GET', KEYS[1])
if not found then return 0 end
local ok, record = pcall(cjson.decode, found)
if not ok or type(record) ~= 'table' or record['token'] ~= ARGV[1] then return 0 end
if ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS: ready, delayed, wake, counter, names.
# ARGV: entry base, tube, body, pri, ttr, delay (microseconds).
_PUT = """
local now = now_us()
local id = redis.call('INCR', KEYS[4])
local delay = tonumber(ARGV[6])
local ready_at = int(now + delay)
redis.call('HSET', ARGV[1] .. int(id), 'tube', ARGV[2], 'body', ARGV[3],
  'pri', ARGV[4], 'ttr', ARGV[5], 'delay', ARGV[6], 'created', int(now),
  'ready_at', ready_at, 'reserves', 0, 'timeouts', 0, 'releases', 0)
if delay > 0 then
  redis.call('ZADD', KEYS[2], now + delay, member(id))
else
  make_ready(KEYS[1], member(id), ARGV[4], ready_at)
end
redis.call('SADD', KEYS[5], ARGV[2])
wake(KEYS[3])
return id
"""

# KEYS: ready, delayed, leases, wake, legacy ready. ARGV: entry base.
# Returns {1, id, body, reserves, releases}, or {0[, microseconds to the
# next delay or lease that runs out]}.
_RESERVE = """
local now = now_us()
promote(KEYS[1], KEYS[2], KEYS[3], KEYS[5], ARGV[1], now)
local entry = reserve_next(KEYS, ARGV[1], now)
if not entry then return nothing_ready(KEYS, now) end
pass_wake(KEYS)
return {1, unpack(entry)}
"""

# A claim (RedisQueue.reserve_in). KEYS: ready, delayed, leases, wake,
# legacy ready. ARGV: entry base, most entries, the documents' key prefix,
# the job keys' and the cancel requests' key prefixes. Returns {1, {id, body,
# reserves, releases, job text, job cas, cancel text, cancel cas}...} (the
# documents are false for a body that is no uuid in quotes), or RESERVE's {0...}.
_CLAIM = """
local now = now_us()
promote(KEYS[1], KEYS[2], KEYS[3], KEYS[5], ARGV[1], now)
local out = {}
for _ = 1, tonumber(ARGV[2]) do
  local entry = reserve_next(KEYS, ARGV[1], now)
  if not entry then break end
  local uuid = string.match(entry[2], '^"([^"\\\\]*)"$')
  local job, cancel = {false, false}, {false, false}
  if uuid then
    job = redis.call('HMGET', ARGV[3] .. ARGV[4] .. uuid, 'value', 'cas')
    cancel = redis.call('HMGET', ARGV[3] .. ARGV[5] .. uuid, 'value', 'cas')
  end
  table.insert(out, {entry[1], entry[2], entry[3], entry[4], job[1], job[2], cancel[1], cancel[2]})
end
if #out == 0 then return nothing_ready(KEYS, now) end
pass_wake(KEYS)
return {1, out}
"""

# The commit of an optimistic transaction (RedisQueue.transact). KEYS: the
# queue's (as _ENTRY's), then the webhook deliveries' (as _ADD_DELIVERIES').
# ARGV: the documents' key prefix, the listing's index base, the job-writes
# channel, the entry base; then the number of documents read and, for each,
# its key and the cas it was read with ('' for none); the number of entries
# to delete and, for each, its id and reserves; the number of writes and,
# for each, its key, the cas it must have ('' when an earlier write of this
# commit has it), its new cas, its text, its listing entry (member, jobType,
# status) and the job's uuid ('' for none); then add_deliveries' args.
# Nothing is written unless everything holds: returns {'ok'}, or {'stale'}
# when a document read changed, {'unheld', id} when another worker reserved
# entry id since, {'conflict', key} for a write's stale cas.
_COMMIT = """
local prefix, base, channel, entries = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  if (redis.call('HGET', prefix .. ARGV[i], 'cas') or '') ~= ARGV[i + 1] then
    return {'stale'}
  end
  i = i + 2
end
local held = {}
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  if redis.call('HGET', entries .. ARGV[i], 'reserves') ~= ARGV[i + 1] then
    return {'unheld', ARGV[i]}
  end
  table.insert(held, {ARGV[i], ARGV[i + 1]})
  i = i + 2
end
n = tonumber(ARGV[i])
local writes = i + 1
for _ = 1, n do
  i = i + 1
  if ARGV[i + 1] ~= '' and redis.call('HGET', prefix .. ARGV[i], 'cas') ~= ARGV[i + 1] then
    return {'conflict', ARGV[i]}
  end
  i = i + 7
end
i = writes
for _ = 1, n do
  local uuid = ARGV[i + 7]
  write_doc(prefix .. ARGV[i], ARGV[i + 3], ARGV[i + 1], 'update', base, ARGV[i + 4],
    ARGV[i + 5], ARGV[i + 6], uuid ~= '' and channel or '', uuid, ARGV[i + 2])
  i = i + 8
end
add_deliveries({KEYS[6], KEYS[7], KEYS[8], KEYS[9]}, ARGV, i)
for _, entry in ipairs(held) do
  entry_action(KEYS, entries, entry[1], entry[2], '', 'delete', 0)
end
return {'ok'}
"""

# KEYS: ready, delayed, leases, wake, legacy ready.
# ARGV: entry base, id, reserves, releases ('' to not check), action, delay.
# Returns 1, or 0 when someone else reserved the entry since (or, with
# releases, the holder released it) or it is gone.
_ENTRY = """
return entry_action(KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
"""

# KEYS: ready, delayed, leases. ARGV: entry base, id.
# Returns {now, tube, pri, ttr, delay, created, ready_at, reserves,
# timeouts, releases, lease}, or nil when the entry is gone.
_STATS = """
local key = ARGV[1] .. ARGV[2]
local m = member(ARGV[2])
local now = now_us()
local f = redis.call('HMGET', key, 'lease', 'ready_at', 'pri')
if not f[3] then return false end
if f[1] and tonumber(f[1]) <= now then
  redis.call('HDEL', key, 'lease')
  redis.call('HSET', key, 'ready_at', f[1])
  redis.call('HINCRBY', key, 'timeouts', 1)
  redis.call('ZREM', KEYS[3], m)
  make_ready(KEYS[1], m, f[3], f[1])
elseif not f[1] and tonumber(f[2]) <= now and redis.call('ZREM', KEYS[2], m) == 1 then
  make_ready(KEYS[1], m, f[3], f[2])
end
local out = redis.call('HMGET', key, 'tube', 'pri', 'ttr', 'delay', 'created',
  'ready_at', 'reserves', 'timeouts', 'releases', 'lease')
table.insert(out, 1, int(now))
return out
"""

# ARGV: queue base, entry base, id. Returns 1 when deleted.
_DELETE = """
local key = ARGV[2] .. ARGV[3]
local f = redis.call('HMGET', key, 'tube', 'lease', 'ready_at')
if not f[1] or (f[2] and tonumber(f[2]) > now_us()) then return 0 end
local m = member(ARGV[3])
redis.call('ZREM', ARGV[1] .. f[1] .. ':ready2', ready_member(f[3], m))
for _, set in ipairs({':ready', ':since', ':delayed', ':leases'}) do
  redis.call('ZREM', ARGV[1] .. f[1] .. set, m)
end
redis.call('DEL', key)
return 1
"""

# KEYS: ready, delayed, leases, legacy ready. ARGV: entry base.
_STATS_TUBE = """
promote(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], now_us())
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[1], '-inf', '(1024'),
  redis.call('ZCARD', KEYS[3]), redis.call('ZCARD', KEYS[2])}
"""


# KEYS: the names set. ARGV: queue base, entry base, this queue's name.
# Returns {now, {name, ready, delayed, reserved, when the oldest ready entry
# became ready ('' for none)}...}: this queue, then every other name that
# holds an entry, by name; names that hold none are forgotten. Nothing is
# promoted: an entry whose delay or lease ran out counts as ready since then.
_DEPTH = """
local now = now_us()
local function depth(name)
  local tube = ARGV[1] .. name
  local ready, legacy, since = tube .. ':ready2', tube .. ':ready', tube .. ':since'
  local delayed, leases = tube .. ':delayed', tube .. ':leases'
  if redis.call('ZCARD', since) ~= redis.call('ZCARD', ready) + redis.call('ZCARD', legacy) then
    -- entries made ready by an older version, which kept no twin set: once
    redis.call('DEL', since)
    for _, r in ipairs(redis.call('ZRANGE', ready, 0, -1)) do
      redis.call('ZADD', since, string.sub(r, 1, 20), string.sub(r, 21))
    end
    for _, m in ipairs(redis.call('ZRANGE', legacy, 0, -1)) do
      local at = redis.call('HGET', entry_key(ARGV[2], m), 'ready_at')
      if at then redis.call('ZADD', since, at, m) else redis.call('ZREM', legacy, m) end
    end
  end
  local due = redis.call('ZCOUNT', delayed, '-inf', now)
  local expired = redis.call('ZCOUNT', leases, '-inf', now)
  local first = false
  for _, set in ipairs({since, delayed, leases}) do
    local head = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if #head > 0 then
      local at = tonumber(head[2])
      if at <= now and (not first or at < first) then first = at end
    end
  end
  return {name, redis.call('ZCARD', ready) + redis.call('ZCARD', legacy) + due + expired,
    redis.call('ZCARD', delayed) - due, redis.call('ZCARD', leases) - expired,
    first and int(first) or ''}
end
local names = redis.call('SMEMBERS', KEYS[1])
table.sort(names)
local out = {int(now), depth(ARGV[3])}
for _, name in ipairs(names) do
  if name ~= ARGV[3] then
    local row = depth(name)
    if row[2] + row[3] + row[4] > 0 then
      table.insert(out, row)
    else
      redis.call('SREM', KEYS[1], name)
    end
  end
end
return out
"""


class _Script:
    """A Lua script run by ``EVALSHA``, sent again after ``NOSCRIPT``
    (a restarted or flushed server forgets its scripts)."""

    def __init__(self, body: str) -> None:
        self.text = _PRELUDE + body
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.text, len(keys), *keys, *args)


# Webhook deliveries: KEYS records (hash id -> JSON), due (zset of pending
# ids by due_at), created (zset by created_at), claims (hash id -> token).
_ADD_DELIVERIES = """
return add_deliveries(KEYS, ARGV, 1)
"""
_CLAIM_DELIVERIES = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
if #ids == 0 then return {} end
for _, id in ipairs(ids) do
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', KEYS[4], id, ARGV[4])
end
return redis.call('HMGET', KEYS[1], unpack(ids))
"""
_PURGE_DELIVERIES = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
local gone = 0
for _, id in ipairs(ids) do
    local text = redis.call('HGET', KEYS[1], id)
    local due = redis.call('ZSCORE', KEYS[2], id)
    if not due then  -- delivered or failed: only pending ones are due
        if text then
            local uuid = cjson.decode(text)['uuid']
            redis.call('SREM', ARGV[3] .. uuid, id)
        end
        redis.call('HDEL', KEYS[1], id)
        redis.call('HDEL', KEYS[4], id)
        redis.call('ZREM', KEYS[3], id)
        gone = gone + 1
    end
end
return gone
"""
_SAVE_DELIVERY = """
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == 'pending' then
    redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
else
    redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""

_SCRIPTS = {
    name: _Script(body)
    for name, body in [
        ("write", _WRITE), ("put", _PUT), ("reserve", _RESERVE), ("entry", _ENTRY),
        ("claim", _CLAIM), ("commit", _COMMIT),
        ("stats", _STATS), ("delete", _DELETE), ("stats_tube", _STATS_TUBE),
        ("delete_doc", _DELETE_DOC), ("list", _LIST), ("reindex", _REINDEX),
        ("claim_key", _CLAIM_KEY), ("replace_key", _REPLACE_KEY),
        ("delete_jobs", _DELETE_JOBS), ("depth", _DEPTH), ("count", _COUNT),
        ("add_deliveries", _ADD_DELIVERIES), ("claim_deliveries", _CLAIM_DELIVERIES),
        ("save_delivery", _SAVE_DELIVERY), ("purge_deliveries", _PURGE_DELIVERIES),
    ]
}  # fmt: skip


# -- connections -----------------------------------------------------------------


class _Server:
    """This process's clients of one server, opened on first use.

    redis-py retries nothing here: a retried script could run twice (two
    puts, or a cas write that then fails against itself). A call that fails
    raises the unavailable error, and the pool reconnects on the next call.
    """

    def __init__(
        self,
        settings: _Settings,
        error: type[Exception],
        setup: Callable[[redis.Redis], None] | None = None,
    ) -> None:
        self.settings = settings
        self._error = error
        self._lock = threading.Lock()
        self._clients: dict[bool, redis.Redis] = {}
        #: run once per process with the first client, before any call
        self._setup = setup
        self._set_up = False
        track(self)

    def _after_fork(self) -> None:
        # a child must not talk on its parent's sockets, nor shut them down
        abandon(*self._clients.values())
        self._clients = {}
        self._lock = threading.Lock()  # another thread may have held it
        self._set_up = False

    def _client(self, blocking: bool) -> redis.Redis:
        with self._lock:
            client = self._clients.get(blocking)
            if client is None:
                s = self.settings
                client = self._clients[blocking] = redis.Redis(
                    host=s.host,
                    port=s.port,
                    db=s.db,
                    username=s.username,
                    password=s.password,
                    # a BLPOP's reply may take its whole timeout
                    socket_timeout=s.socket_timeout + (WAKE_FALLBACK if blocking else 0),
                    socket_connect_timeout=s.socket_connect_timeout,
                    retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
                    decode_responses=True,
                )
            return client

    @contextmanager
    def connect(self, blocking: bool = False) -> Iterator[redis.Redis]:
        """A client; connection failures become the unavailable error."""
        try:
            client = self._client(blocking)
            if self._setup is not None and not self._set_up:
                self._setup(self._client(False))
                self._set_up = True
            yield client
        except _UNAVAILABLE as exc:
            raise self._error(
                f"Redis server {self.settings.server} is unavailable: {exc}"
            ) from exc
        except redis.exceptions.RedisError as exc:
            if not _refused(exc):
                raise
            raise self._error(
                f"Redis server {self.settings.server} refused the command:"
                f" {type(exc).__name__}: {exc}"
            ) from exc

    def run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        with self.connect() as client:
            return _SCRIPTS[script](client, keys, args)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.connection_pool.disconnect()


# -- datastore -------------------------------------------------------------------


class RedisDatastore(CasDatastore):
    """The datastore protocol on Redis.

    A document is a hash of its JSON text and its ``cas``, so a ``str``
    comes back as a ``str``. Writes run as one Lua script each, so a
    compare-and-swap is atomic. A new ``cas`` is ``max(server time in ns,
    previous cas + 1)``, as in the SQLite store: it grows with every write
    of a key and, being a clock reading, across a delete and re-create.
    Nothing locks a document, so :attr:`lockedException` is never raised.

    :param url: ``redis://host:port/db?prefix=...``, see the module.
    """

    def __init__(self, url: str) -> None:
        settings = _parse_url(url)
        self._server = _Server(settings, errors.DatastoreUnavailable, self._migrate)
        self.prefix = settings.prefix + "doc:"
        self._jobs = settings.prefix + "jobs:"
        self._keys = settings.prefix + "idempotency:"
        self._workers = settings.prefix + "workers"
        hooks = settings.prefix + "webhooks"
        self._deliveries = [hooks, hooks + ":due", hooks + ":created", hooks + ":claims"]
        self._job_deliveries = hooks + ":job:"
        #: The pub/sub channel of job writes: each carries the job's uuid.
        self.channel = settings.prefix + "job-writes"
        self._listener = WriteListener(f"redis {settings.server}", self._receiver)

    def __repr__(self) -> str:
        return f"<RedisDatastore {self._server.settings.server} prefix={self.prefix!r}>"

    def close(self) -> None:
        """Close this process's connections; the next call opens them again."""
        self._listener.close()
        self._server.close()

    def job_writes(self, uuid: str) -> AbstractContextManager[threading.Event]:
        """An event set after each write of job ``uuid`` (see
        :class:`~flask_spacewalk.runtime.protocols.JobWriteNotifier`): the
        write's script publishes the uuid, and this process's one subscriber
        hears it."""
        return self._listener.job_writes(uuid)

    def _receiver(self) -> _PubSubReceiver:
        return _PubSubReceiver(self._server.settings, self.channel)

    def read(self, key: str) -> Value | None:
        return self.read_with_cas(key)[0]

    def read_with_cas(self, key: str) -> tuple[Value | None, int]:
        with self._server.connect() as client:
            text, cas = client.hmget(self.prefix + key, ["value", "cas"])
        if text is None:
            return None, 0
        return json.loads(text), int(cas or 0)

    def read_many(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        """Each key's value and cas, in the order given, in one round trip."""
        with self._server.connect() as client:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self.prefix + key, ["value", "cas"])
            replies = pipe.execute()
        return [
            (None, 0) if text is None else (json.loads(text), int(cas or 0))
            for text, cas in replies
        ]

    def _create(self, key: str, value: Value, index: JobIndex | None) -> None:
        self._script_write(key, value, None, "create", index)

    def delete(self, key: str) -> bool:
        return bool(self._server.run("delete_doc", [self.prefix + key], [self._jobs]))

    def delete_jobs(self, jobs: Sequence[JobDeletion]) -> list[str]:
        """Delete each job whose cas is still the one given, with its side
        keys and its listing entries, in one script; the keys deleted, in
        the order given."""
        if not jobs:
            return []
        args: list[Any] = [self._jobs, self.prefix]
        for job in jobs:
            args += [job.key, str(int(job.cas)), len(job.side_keys), *job.side_keys]
        return list(self._server.run("delete_jobs", [], args))

    def count_jobs(self) -> dict[tuple[str, str], int]:
        """The stored jobs by ``(jobType, status)``, as the write scripts
        keep them (one hash, whatever the number of jobs)."""
        with self._server.connect() as client:
            # decode_responses: str, whatever redis-py's types say
            fields = cast("dict[str, str]", client.hgetall(self._jobs + "counts"))
        counts = {}
        for field, n in fields.items():
            status, _, job_type = field.partition(":")
            counts[job_type, status] = int(n)
        return counts

    def ping(self) -> None:
        """``PING``: raise :exc:`~flask_spacewalk.errors.DatastoreUnavailable`
        when the server does not answer."""
        with self._server.connect() as client:
            client.ping()

    def list_jobs(self, query: JobQuery) -> list[dict[str, Any]]:
        """The jobs ``query`` selects, newest first (see
        :class:`~flask_spacewalk.runtime.query.JobQuery`).

        One script reads each range of :meth:`JobQuery.plan` from its sorted
        set: O(log n + limit) when the residual conditions pass, more when
        they skip entries.
        """
        index, values = query.plan()
        if index == "all":
            keys = [self._jobs + "all"]
        else:
            keys = [f"{self._jobs}{index}:{value}" for value in values]
        high = "+" if query.after is None else "(" + " ".join(query.after)
        low = "-" if query.since is None else "[" + query.since

        def wanted(values: frozenset[str] | None, own: str) -> str:
            if values is None or index == own:
                return ""
            return "".join(value + "\n" for value in values)

        args = [self.prefix + JOB_KEY_PREFIX, high, low, query.limit,
                wanted(query.job_types, "type"), wanted(query.statuses, "status")]  # fmt: skip
        found = []
        for flat in self._server.run("list", keys, args):
            rows = []
            for member, text in zip(flat[::2], flat[1::2]):
                created, _, uuid = member.rpartition(" ")
                rows.append((created, uuid, json.loads(text)))
            found.append(rows)
        return newest_first(found, query.limit)

    def claim_key(self, key: str, record: KeyRecord) -> KeyRecord | None:
        """Store ``record`` with ``SET NX`` and its expiry (None when
        stored), else the record that is there: Redis deletes a record
        when it expires."""
        found = self._server.run(
            "claim_key", [self._keys + key], [json.dumps(record.to_value()), _expiry_ms(record)]
        )
        if found is None:
            return None
        try:
            record_found = KeyRecord.from_value(json.loads(found))
        except ValueError:
            record_found = None
        if record_found is None:  # not a record: taken as an expired one
            with self._server.connect() as client:
                client.set(self._keys + key, json.dumps(record.to_value()),
                           px=_expiry_ms(record))  # fmt: skip
        return record_found

    def replace_key(self, key: str, token: str, record: KeyRecord) -> bool:
        """Replace the record under ``key`` whose token is ``token``."""
        args = [token, json.dumps(record.to_value()), _expiry_ms(record)]
        return bool(self._server.run("replace_key", [self._keys + key], args))

    def release_key(self, key: str, token: str) -> bool:
        """Delete the record under ``key`` whose token is ``token``."""
        return bool(self._server.run("replace_key", [self._keys + key], [token]))
    def save_worker(self, id: str, record: dict[str, Any]) -> None:
        """Create or replace the record of worker ``id`` (hash ``P workers``)."""
        text = encode_value(record)
        with self._server.connect() as client:
            client.hset(self._workers, id, text)

    def list_workers(self) -> list[dict[str, Any]]:
        """Every stored worker record."""
        with self._server.connect() as client:
            texts = cast("dict[str, str]", client.hgetall(self._workers))
        return [json.loads(text) for text in texts.values()]

    def delete_worker(self, id: str) -> bool:
        """Remove worker ``id``'s record; ``False`` when there was none."""
        with self._server.connect() as client:
            return bool(client.hdel(self._workers, id))

    # -- webhook deliveries (runtime/protocols.py DeliveryStore) -----------
    # The record's JSON as Python wrote it (Lua's cjson would turn an empty
    # list into an object), its due time in a sorted set, its claim in a
    # hash: each change is one script.

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Store each delivery whose id is new, in one script."""
        if not deliveries:
            return 0
        args: list[Any] = [self._job_deliveries]
        for d in deliveries:
            args += [d.id, d.due_at, d.created_at, d.uuid, d.to_text()]
        return int(self._server.run("add_deliveries", self._deliveries, args))

    def claim_deliveries(self, now: float, lease: float, limit: int, token: str) -> list[Delivery]:
        """Take the due pending deliveries, oldest due first."""
        texts = self._server.run("claim_deliveries", self._deliveries,
                                 [now, now + lease, limit, token])  # fmt: skip
        taken = [Delivery.from_text(text) for text in texts if text is not None]
        for d in taken:
            d.claim, d.due_at = token, now + lease
        return taken

    def save_delivery(self, delivery: Delivery, token: str) -> bool:
        """Store ``delivery`` if still claimed with ``token``."""
        d = delivery
        args = [d.id, token, d.to_text(), d.status, d.due_at]
        return bool(self._server.run("save_delivery", self._deliveries, args))

    def list_deliveries(
        self, status: str | None = None, uuid: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        """The newest deliveries first; a status filter reads the newest
        :data:`DELIVERY_SCAN` deliveries."""
        with self._server.connect() as client:
            ids: list[Any]
            if uuid is not None:
                ids = list(client.smembers(self._job_deliveries + uuid))
            else:
                ids = cast("list[Any]", client.zrevrange(
                    self._deliveries[2], 0, (DELIVERY_SCAN if status else limit) - 1))
            texts = client.hmget(self._deliveries[0], ids) if ids else []
        found = [Delivery.from_text(text) for text in texts if text is not None]
        found = [d for d in found if status is None or d.status == status]
        found.sort(key=lambda d: (-d.created_at, d.id))
        return found[:limit]

    def retry_delivery(self, id: str, now: float) -> bool:
        """Make a failed or pending delivery due now."""
        records, due, _, claims = self._deliveries
        with self._server.connect() as client:
            text = client.hget(records, id)
            if text is None:
                return False
            d = Delivery.from_text(text)
            if d.status == DeliveryStatus.DELIVERED:
                return False
            retried(d, now)
            with client.pipeline() as pipe:
                pipe.hset(records, id, d.to_text())
                pipe.zadd(due, {id: now})
                pipe.hdel(claims, id)
                pipe.execute()
        return True

    def purge_deliveries(self, before: float, limit: int) -> int:
        """Delete old delivered or failed deliveries, among the ``limit``
        oldest recorded before ``before``."""
        args = [before, limit, self._job_deliveries]
        return int(self._server.run("purge_deliveries", self._deliveries, args))

    def _write(
        self, key: str, value: Value, cas: int | None, create: bool, index: JobIndex | None
    ) -> int:
        return self._script_write(key, value, cas, "set" if create else "update", index)

    def _script_write(
        self, key: str, value: Value, cas: int | None, mode: str, index: JobIndex | None
    ) -> int:
        """Write ``value``; return the new cas, or 0 when ``key`` is missing
        and ``mode`` is ``update``."""
        args = [encode_value(value), str(int(cas)) if cas else "", mode, self._jobs,
                *_entry(key, index)]  # fmt: skip
        if key.startswith(JOB_KEY_PREFIX) and mode != "create":
            args += [self.channel, key[len(JOB_KEY_PREFIX):]]
        result = self._server.run("write", [self.prefix + key], args)
        if result == -2:
            raise self.existsException(f"document {key!r} already exists")
        if result == -1:
            raise self.casException(f"document {key!r} changed or was deleted since cas {cas}")
        return int(result)

    def _migrate(self, client: redis.Redis) -> None:
        """Bring the listing's indexes to :data:`INDEX_VERSION` (once per
        process, at its first call: one ``GET`` when they are)."""
        version_key = self._jobs + "version"
        version = client.get(version_key)
        if version is not None and int(version) >= INDEX_VERSION:
            return
        if version is None or int(version) < 2:
            self._list_cancelled(client)
        self._count_jobs(client)
        client.set(version_key, INDEX_VERSION)

    def _count_jobs(self, client: redis.Redis) -> None:
        """Version 3: count the listed jobs that no write counted yet, a
        batch of :data:`MIGRATION_BATCH` at a time (a write meanwhile counts
        its document itself, and each is counted once)."""
        low = "-"
        while True:
            members = cast(
                "list[str]",
                client.zrangebylex(self._jobs + "all", low, "+", start=0, num=MIGRATION_BATCH),
            )
            if not members:
                return
            keys = [self.prefix + JOB_KEY_PREFIX + m.rpartition(" ")[2] for m in members]
            _SCRIPTS["count"](client, keys, [self._jobs])
            low = "(" + members[-1]

    def _list_cancelled(self, client: redis.Redis) -> None:
        """Version 2 lists result 410 as ``cancelled``: the members of the
        ``failed`` set are read a batch at a time, and each whose document
        is of another status now is moved, unless its document changed
        meanwhile (its write moved it).
        """
        failed = f"{self._jobs}status:{JobStatus.FAILED.value}"
        low = "-"
        while True:
            # decode_responses: str, whatever redis-py's types say
            members = cast(
                "list[str]", client.zrangebylex(failed, low, "+", start=0, num=MIGRATION_BATCH)
            )
            if not members:
                break
            keys = [JOB_KEY_PREFIX + member.rpartition(" ")[2] for member in members]
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self.prefix + key, ["value", "cas"])
            for key, (text, cas) in zip(keys, pipe.execute()):
                if text is None:
                    continue
                index = job_index(key, json.loads(text))
                if index is None or index.status is not JobStatus.FAILED:
                    _SCRIPTS["reindex"](client, [self.prefix + key],
                                        [self._jobs, cas, *_entry(key, index)])  # fmt: skip
            low = "(" + members[-1]


class _PubSubReceiver:
    """A connection of its own, subscribed to the job writes' channel."""

    def __init__(self, settings: _Settings, channel: str) -> None:
        self._client = redis.Redis(
            host=settings.host, port=settings.port, db=settings.db,
            username=settings.username, password=settings.password,
            socket_connect_timeout=settings.socket_connect_timeout,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0), decode_responses=True,
        )  # fmt: skip
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            self._pubsub.subscribe(channel)
            # the confirmation: listening from here on
            self._pubsub.get_message(timeout=settings.socket_connect_timeout)
        except BaseException:
            self.close()
            raise

    def receive(self, timeout: float) -> Iterator[str]:
        message = self._pubsub.get_message(timeout=timeout)
        while message is not None:
            if message.get("type") == "message":
                yield str(message["data"])
            message = self._pubsub.get_message(timeout=0)

    def close(self) -> None:
        self._pubsub.close()
        self._client.close()


def _expiry_ms(record: KeyRecord) -> int:
    """Milliseconds from now to ``record``'s expiry, at least 1 (``PX``
    takes no less)."""
    return max(1, math.ceil((record.expires_at - time.time()) * 1000))


def _entry(key: str, index: JobIndex | None) -> tuple[str, str, str]:
    """A document's listing entry as the scripts take it: the member
    ``<createdAt> <uuid>``, jobType and status; ``''`` for none."""
    if index is None:
        return "", "", ""
    member = f"{index.created_at} {key[len(JOB_KEY_PREFIX):]}"
    return member, index.job_type or "", index.status.value


# -- queue -----------------------------------------------------------------------


class RedisQueue(BaseQueue):
    """The queue protocol on Redis, with beanstalkd's meanings.

    Entries are taken by priority (lower is more urgent), then in the order
    they became ready: at their put, or when their delay (of the put or a
    release) or lease ran out; then in the order they were put. A reserved
    entry whose lease runs out (``ttr`` seconds after the reserve or the
    last touch) is ready again with one more ``timeouts``; this is noticed
    at the next reserve or stats. Entry ids are shared by all queue names
    under one prefix.

    A blocked :meth:`reserve` waits with ``BLPOP`` on the queue's wake-up
    list, so a put from another process wakes it within a millisecond; it
    also looks again when a delay or lease runs out and every
    :data:`WAKE_FALLBACK` seconds, so correctness never depends on a token.
    One thread at a time should block in :meth:`reserve` on one queue
    object; the other methods and the entries' methods may be called from
    any thread.

    :param url: ``redis://host:port/db?prefix=...``, see the module.
    :param name: The queue's name (beanstalkd's tube).
    :param default_ttr: The lease, in seconds, of an entry put without one.
    """

    def __init__(self, url: str, name: str, default_ttr: float = defaults.JOB_TTR) -> None:
        settings = _parse_url(url)
        self._server = _Server(settings, errors.QueueUnavailable)
        self.queueName = name
        self.default_ttr = default_ttr
        self._base = f"{settings.prefix}queue:"
        self._entries = self._base + "entry:"
        tube = self._base + name
        self._ready, self._delayed = tube + ":ready2", tube + ":delayed"
        self._leases, self._wake = tube + ":leases", tube + ":wake"
        self._legacy_ready = tube + ":ready"  # see the module
        self._names = self._base + "names"
        #: the datastore on this server whose documents transactions write
        self._store: RedisDatastore | None = None
        #: the documents the last claim read: a later transaction starts
        #: from them (a batch's next job), and its commit checks them
        self._claimed: dict[str, _Read] = {}

    def __repr__(self) -> str:
        return f"<RedisQueue {self.queueName!r} on {self._server.settings.server}>"

    def close(self) -> None:
        """Close this process's connections; the next call opens them again."""
        self._server.close()

    def attach(self) -> None:
        """Do nothing: a queue object always uses and watches its name."""

    def detach(self) -> None:
        """Do nothing (see :meth:`attach`)."""

    def put(
        self,
        data: Any,
        ttr: float | None = None,
        delay: float = 0,
        priority: int = 2**31,
    ) -> int:
        """Enqueue ``json.dumps(data)``; return the entry's id.

        :param ttr: The entry's lease in seconds, ``default_ttr`` if None.
        :param delay: Seconds before the entry can be reserved.
        :param priority: 0 is the most urgent.
        """
        ttr = lease_seconds(ttr, self.default_ttr)
        args = [
            self._entries, self.queueName, json.dumps(data), check_priority(priority),
            max(1, round(ttr * 1e6)), round(max(delay, 0) * 1e6),
        ]  # fmt: skip
        keys = [self._ready, self._delayed, self._wake, self._base + "last-id", self._names]
        return int(self._server.run("put", keys, args))

    def reserve(self, timeout: float | None = None) -> RedisQueueEntry | None:
        """Take the next ready entry, waiting up to ``timeout`` seconds
        (forever if None, not at all if 0); None if none came."""
        return self._wait(self._try_reserve, timeout)

    def _wait(
        self, attempt: Callable[[], tuple[T | None, float | None]], timeout: float | None
    ) -> T | None:
        """``attempt()``'s first value that is not None, trying again as
        entries come (``BLPOP`` on the wake-up list) for up to ``timeout``
        seconds; None if none came. ``attempt`` also gives the seconds to
        the next delay or lease that runs out."""
        return wait_for_entries(attempt, timeout, self._sleep, WAKE_FALLBACK)

    def _sleep(self, seconds: float) -> None:
        """Wait up to ``seconds`` for a put's token on the wake-up list."""
        # BLPOP counts in milliseconds, and 0 would mean forever
        seconds = max(math.ceil(seconds * 1000), 1) / 1000
        with self._server.connect(blocking=True) as client:
            client.blpop([self._wake], timeout=seconds)

    def _try_reserve(self) -> tuple[RedisQueueEntry | None, float | None]:
        """The reserved entry, or None and the seconds to the next delay or
        lease that runs out (None if there is none)."""
        keys = [self._ready, self._delayed, self._leases, self._wake, self._legacy_ready]
        result = self._server.run("reserve", keys, [self._entries])
        if result[0]:
            _, id, body, reserves, releases = result
            return RedisQueueEntry(self, id, body, reserves, releases), None
        return None, result[1] / 1e6 if len(result) > 1 else None

    # -- transactions with the datastore (runtime/protocols.py SharedTransactions)

    def shares_database(self, datastore: Any) -> bool:
        """Whether ``datastore`` is a :class:`RedisDatastore` of this server,
        database and user, so that one script can write its documents and
        this queue's entries. A queue serves the transactions of one datastore
        prefix: another one's is not shared."""
        if not isinstance(datastore, RedisDatastore):
            return False
        mine, theirs = self._server.settings, datastore._server.settings
        # (another user may lack the permissions on the other's keys)
        if (mine.host, mine.port, mine.db, mine.username) != (
            theirs.host, theirs.port, theirs.db, theirs.username
        ):
            return False
        if self._store is None:
            self._store = datastore
        return self._store.prefix == datastore.prefix

    def reserve_in(
        self,
        count: int,
        timeout: float | None,
        then: Callable[[StoreTransaction, list[QueueEntry]], T],
    ) -> T | None:
        """Reserve up to ``count`` ready entries, waiting up to ``timeout``
        seconds for the first, reading each one's job and cancel request in
        the same script, and call ``then(transaction, entries)`` in a
        transaction (:meth:`transact`) that starts from those reads; its
        value, or None when none came.

        When the transaction fails (the server went away), the entries are
        released, as a rollback of the claim would leave them.

        :raises ValueError: ``count`` is not a positive integer.
        """
        check_count(count)
        store = self._shared_store()
        args = [self._entries, count, store.prefix, JOB_KEY_PREFIX, _CANCEL_PREFIX]
        keys = [self._ready, self._delayed, self._leases, self._wake, self._legacy_ready]

        def attempt() -> tuple[tuple[list[RedisQueueEntry], dict[str, _Read]] | None,
                               float | None]:
            result = self._server.run("claim", keys, args)
            if not result[0]:
                return None, result[1] / 1e6 if len(result) > 1 else None
            entries, read = [], {}
            for id, body, reserves, releases, job, job_cas, cancel, cancel_cas in result[1]:
                entries.append(RedisQueueEntry(self, id, body, reserves, releases))
                try:
                    uuid = json.loads(body)
                except ValueError:
                    continue
                if isinstance(uuid, str):  # as the script found it in quotes
                    read[JOB_KEY_PREFIX + uuid] = _Read(job, job_cas)
                    read[cancel_key(uuid)] = _Read(cancel, cancel_cas)
            return (entries, read), None

        claimed = self._wait(attempt, timeout)
        if claimed is None:
            return None
        entries, read = claimed
        self._claimed = read
        try:
            return self._transact(lambda tx: then(tx, list(entries)), read, fresh=True)
        except BaseException:
            for entry in entries:
                try:
                    entry.release()
                except errors.QueueError:
                    pass  # its lease brings it back
            raise

    def transact(self, func: Callable[[StoreTransaction], T]) -> T:
        """``func(transaction)`` in one optimistic transaction; its value.

        The transaction reads documents when asked (one round trip per
        call, none for a cancel request: see :meth:`_Transaction.read`) and
        keeps its writes, webhook deliveries and entry deletions until
        ``func`` returns; then one script writes them all if nothing it read
        changed meanwhile and every entry is still held, and nothing
        otherwise. Then ``func`` runs again on fresh reads (another writer's
        commit came between: each retry follows someone's progress), and
        with the entries another worker took since answering False. So
        ``func`` may run more than once, and acts only through the
        transaction.

        :raises: the datastore's ``casException`` when a write's own cas
            (not read in the transaction) is stale: nothing is written.
        """
        return self._transact(func, self._claimed, fresh=False)

    def _shared_store(self) -> RedisDatastore:
        if self._store is None:
            raise TypeError(f"{self!r} shares no datastore: call shares_database first")
        return self._store

    def _transact(
        self, func: Callable[[StoreTransaction], T], read: dict[str, _Read], fresh: bool
    ) -> T:
        """:param read: documents read before, which ``func`` is given as
            they were; ``fresh``: read a moment ago, by the claim's script
            (others may have changed: only a commit confirms them)."""
        store = self._shared_store()
        unheld: set[int] = set()
        presume = True
        while True:
            transaction = _Transaction(self, store, read, unheld, presume, fresh)
            value = func(transaction)
            if transaction.empty:
                return value
            keys = [self._ready, self._delayed, self._leases, self._wake, self._legacy_ready,
                    *store._deliveries]  # fmt: skip
            verdict = self._server.run("commit", keys, transaction.arguments())
            if verdict[0] == "ok":
                return value
            if verdict[0] == "conflict":
                raise store.casException(f"document {verdict[1][len(store.prefix):]!r} "
                                         "changed or was deleted since its cas")
            if verdict[0] == "unheld":
                unheld.add(int(verdict[1]))
            else:  # stale: read again, every key
                read, presume, fresh = {}, False, True

    def delete(self, id: int) -> bool:
        """Delete an entry that is ready, delayed, or reserved by nobody
        whose lease still runs; False when there is no such entry.

        As in beanstalkd, ``id`` may be of any queue name under the prefix.
        """
        return bool(self._server.run("delete", [], [self._base, self._entries, int(id)]))

    def has_entry(self, id: int, data: Any) -> bool:
        """Whether entry ``id`` is still in the queue (ready, delayed or
        reserved) with the body ``json.dumps(data)``.

        The body is compared because an id alone may name another entry:
        a flushed Redis counts from 1 again.
        As in :meth:`delete`, ``id`` may be of any queue name under the prefix.
        """
        if not isinstance(id, int) or isinstance(id, bool) or id < 1:
            return False
        with self._server.connect() as client:
            body = client.hget(self._entries + str(id), "body")
        return isinstance(body, str) and same_body(body, data)

    def ping(self) -> None:
        """``PING``: raise :exc:`~flask_spacewalk.errors.QueueUnavailable`
        when the server does not answer."""
        with self._server.connect() as client:
            client.ping()

    def stats_tube(self) -> dict[str, Any]:
        """beanstalkd's ``stats-tube`` counts for this queue name."""
        keys = [self._ready, self._delayed, self._leases, self._legacy_ready]
        ready, urgent, reserved, delayed = self._server.run("stats_tube", keys, [self._entries])
        return {
            "name": self.queueName,
            "current-jobs-urgent": urgent,
            "current-jobs-ready": ready,
            "current-jobs-reserved": reserved,
            "current-jobs-delayed": delayed,
        }

    def queue_stats(self) -> list[QueueDepth]:
        """This queue's depth, then that of every other queue name under the
        prefix that holds an entry, by name: one script of O(log n) reads
        per name."""
        now, *rows = self._server.run(
            "depth", [self._names], [self._base, self._entries, self.queueName]
        )
        return [
            QueueDepth(
                name, int(ready), int(delayed), int(reserved),
                None if since == "" else round((int(now) - int(since)) / 1e6, 3),
            )
            for name, ready, delayed, reserved, since in rows
        ]  # fmt: skip

    def _entry_action(
        self, entry: RedisQueueEntry, action: str, held: bool, delay: float = 0
    ) -> None:
        """Delete, touch or release ``entry`` if nobody reserved it since
        its holder did and, if ``held``, the holder did not release it."""
        args = [
            self._entries, entry.id, entry._reserves,
            entry._releases if held else "", action, round(max(delay, 0) * 1e6),
        ]  # fmt: skip
        keys = [self._ready, self._delayed, self._leases, self._wake, self._legacy_ready]
        if not self._server.run("entry", keys, args):
            raise errors.EntryNotReserved(
                f"entry {entry.id} of {self.queueName!r} was deleted, released,"
                " or reserved by another worker"
            )

    def _entry_stats(self, id: int) -> dict[str, Any]:
        keys = [self._ready, self._delayed, self._leases]
        row = self._server.run("stats", keys, [self._entries, id])
        if row is None:
            raise errors.EntryNotReserved(f"entry {id} was deleted")
        now, tube, pri, ttr, delay, created, ready_at, reserves, timeouts, releases, lease = row
        now, ready_at = int(now), int(ready_at)
        if lease is not None:
            state, left = "reserved", int(lease) - now
        elif ready_at > now:
            state, left = "delayed", ready_at - now
        else:
            state, left = "ready", 0
        return {
            "id": id,
            "tube": tube,
            "state": state,
            "pri": int(pri),
            "age": (now - int(created)) // 1_000_000,
            "delay": _seconds(delay),
            "ttr": _seconds(ttr),
            "time-left": round(left / 1e6, 3),
            "reserves": int(reserves),
            "timeouts": int(timeouts),
            "releases": int(releases),
        }


class _Read(NamedTuple):
    """A document as a transaction read it: its text (None when missing)
    and cas as the server gave them."""

    text: str | None
    cas: str | None


class _Transaction:
    """One attempt of an optimistic transaction over a :class:`RedisQueue`
    and the :class:`RedisDatastore` on its server (runtime/protocols.py
    ``StoreTransaction``): the reads it made, and the changes the commit
    script makes together (see :meth:`RedisQueue.transact`)."""

    def __init__(
        self, queue: RedisQueue, store: RedisDatastore, read: dict[str, _Read], unheld: set[int],
        presume: bool, fresh: bool,
    ) -> None:
        self._queue, self._store, self._presume = queue, store, presume
        self._fresh = fresh
        #: documents read before (by the claim's script) or in this attempt
        self._read = dict(read)
        self._unheld = unheld
        #: the cas each document was read with, which the commit checks
        self._checks: dict[str, str] = {}
        #: what this attempt wrote: new text and cas by key
        self._written: dict[str, tuple[str, int]] = {}
        self._writes: list[Any] = []
        self._entries: list[RedisQueueEntry] = []
        self._deliveries: list[Delivery] = []
        #: whether a read was presumed, which only a commit confirms
        self._presumed = False

    @property
    def empty(self) -> bool:
        """Whether the attempt needs no commit."""
        return not (self._writes or self._entries or self._deliveries or self._presumed)

    def read(self, keys: Sequence[str]) -> list[tuple[Value | None, int]]:
        """Each key's value and cas: as read before (by the last claim's
        script), else in one round trip, but for cancel requests, which are
        rare: one not read yet is taken as absent. The commit checks every
        read (else the transaction runs again, reading every key), and is
        sent for those alone if needed."""
        missing = []
        for key in keys:
            if key in self._written:
                continue
            if key in self._read:
                self._presumed = self._presumed or not self._fresh
                continue
            if self._presume and key.startswith(_CANCEL_PREFIX):
                self._read[key] = _Read(None, None)
                self._presumed = True
            else:
                missing.append(key)
        if missing:
            with self._queue._server.connect() as client:
                pipe = client.pipeline(transaction=False)
                for key in missing:
                    pipe.hmget(self._store.prefix + key, ["value", "cas"])
                for key, (text, cas) in zip(missing, pipe.execute()):
                    self._read[key] = _Read(text, cas)
        found: list[tuple[Value | None, int]] = []
        for key in keys:
            if key in self._written:
                text, new_cas = self._written[key]
                found.append((json.loads(text), new_cas))
                continue
            text, cas = self._read[key]
            self._checks.setdefault(key, cas or "")
            found.append((None, 0) if text is None else (json.loads(text), int(cas or 0)))
        return found

    def write(self, key: str, value: dict[str, Any], cas: int) -> int:
        text = encode_value(value)
        known = self._written[key][1] if key in self._written else None
        if known is None and key in self._checks:
            known = int(self._checks[key] or 0)
        # (a cas of 0 replaces nothing: no document has it)
        if not cas or (known is not None and known != cas):
            raise self._store.casException(
                f"document {key!r} changed or was deleted since cas {cas}"
            )
        # as the SQLite store's: the cas is known before the commit
        new_cas = max(time.time_ns(), cas + 1)
        uuid = key[len(JOB_KEY_PREFIX):] if key.startswith(JOB_KEY_PREFIX) else ""
        checked = "" if key in self._written or key in self._checks else str(cas)
        self._writes.append([key, checked, str(new_cas), text,
                             *_entry(key, job_index(key, value)), uuid])  # fmt: skip
        self._written[key] = (text, new_cas)
        return new_cas

    def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Keep ``deliveries`` for the commit: how many were given (the
        commit adds those whose id is new)."""
        self._deliveries.extend(deliveries)
        return len(deliveries)

    def delete_entry(self, entry: QueueEntry) -> bool:
        if not isinstance(entry, RedisQueueEntry) or entry._queue is not self._queue:
            raise TypeError(f"{entry!r} is not an entry of {self._queue!r}")
        if entry.id in self._unheld:
            return False
        self._entries.append(entry)
        return True

    def arguments(self) -> list[Any]:
        """The commit script's ``ARGV``."""
        store = self._store
        args: list[Any] = [store.prefix, store._jobs, store.channel, self._queue._entries,
                           len(self._checks)]  # fmt: skip
        for key, cas in self._checks.items():
            args += [key, cas]
        args.append(len(self._entries))
        for entry in self._entries:
            args += [entry.id, entry._reserves]
        args.append(len(self._writes))
        for write in self._writes:
            args += write
        args.append(store._job_deliveries)
        for d in self._deliveries:
            args += [d.id, d.due_at, d.created_at, d.uuid, d.to_text()]
        return args


class RedisQueueEntry(HeldEntry):
    """A reserved entry of a :class:`RedisQueue` (rules in :class:`HeldEntry`)."""

    def delete(self) -> None:
        """Remove the entry for good."""
        self._queue._entry_action(self, "delete", held=False)

    def release(self, delay: float = 0) -> None:
        """Make the entry ready again, after ``delay`` seconds."""
        self._queue._entry_action(self, "release", held=True, delay=delay)

    def touch(self) -> None:
        """Renew the lease for another ``ttr`` seconds."""
        self._queue._entry_action(self, "touch", held=True)


def _seconds(microseconds: str) -> float:
    """Stored microseconds as seconds: an int when whole, as beanstalkd
    reports them."""
    value = int(microseconds)
    return value // 1_000_000 if value % 1_000_000 == 0 else value / 1e6
