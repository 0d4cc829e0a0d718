"""The Redis backend in the conformance suite.

Each test gets its own key prefix on the server at 127.0.0.1:6379, db 0;
every key under it is deleted afterwards. Without that server the tests
skip locally and fail in CI.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

SERVER = "redis://127.0.0.1:6379/0"


def requires_ci_or_skip(reason: str) -> None:
    """Skip with ``reason`` locally; fail in CI, where everything must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def delete_prefix(client: object, prefix: str) -> None:
    """Delete every key that starts with ``prefix`` (no glob characters)."""
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))  # type: ignore[attr-defined]
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])  # type: ignore[attr-defined]


@contextlib.contextmanager
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A URL with a fresh prefix on the shared server."""
    try:
        import redis
    except ImportError:
        requires_ci_or_skip("redis-py is not installed")
    client = redis.Redis(host="127.0.0.1", port=6379, db=0, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        client.close()
        requires_ci_or_skip(f"no Redis server at 127.0.0.1:6379: {exc}")
    prefix = f"sw_test_{secrets.token_hex(6)}:"
    try:
        # a longer socket timeout than the 1 s default: under the whole
        # suite's load on two cores, a reply can wait that long
        yield f"{SERVER}?prefix={prefix}&socket_timeout=5"
    finally:
        delete_prefix(client, prefix)
        client.close()


def with_options(url: str, **options: object) -> str:
    """``url`` with these query options set (replacing any already there)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({name: str(value) for name, value in options.items()})
    return parts._replace(query=urlencode(query, safe=":")).geturl()


DATASTORES = {"redis": redis_url}
QUEUES = {"redis": redis_url}
