"""PostgreSQL for the conformance suite.

Each test gets a fresh schema in database ``test`` at 127.0.0.1:5432 (trust
authentication), named by the URL's ``schema`` parameter and dropped
afterwards. Tests skip when the server is absent, and fail when ``CI=true``.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import psycopg
except ImportError:  # pragma: no cover - the test extra installs it
    psycopg = None  # type: ignore[assignment]

SERVER = "127.0.0.1:5432"
DATABASE_URL = f"postgresql://{SERVER}/test"


def requires_ci_or_skip(reason: str) -> None:
    """Skip with ``reason`` locally; fail in CI, where everything must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def admin() -> Any:
    """A connection of its own to database ``test``, in autocommit mode."""
    if psycopg is None:
        requires_ci_or_skip("psycopg is not installed: pip install -e '.[test]'")
    try:
        return psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        requires_ci_or_skip(f"PostgreSQL is not running at {SERVER} (database test): {exc}")
        raise


def new_schema_name() -> str:
    return f"sw_{secrets.token_hex(6)}"


@contextlib.contextmanager
def dropped_afterwards(schema: str) -> Iterator[None]:
    """Drop ``schema`` (if any) when the block ends."""
    try:
        yield
    finally:
        with admin() as conn:
            conn.execute("SET lock_timeout = '10s'")  # never hang a teardown
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def postgres_url(tmp_path: Path) -> Iterator[str]:
    schema = new_schema_name()
    with admin() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    with dropped_afterwards(schema):
        yield f"{DATABASE_URL}?schema={schema}"


DATASTORES = {"postgresql": postgres_url}
QUEUES = {"postgresql": postgres_url}
