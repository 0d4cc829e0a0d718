"""Backends for the conformance suite, and helpers to run code in processes.

:data:`DATASTORES` and :data:`QUEUES` map a backend name to a context
manager that yields the URL of a fresh, empty store (its own file, database
schema or key prefix) and cleans it up afterwards. A backend that needs a
service adds itself from its own module, ``tests/backend_<name>.py``,
loaded below if present; it skips when the service is absent locally and
fails when ``CI=true``.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import multiprocessing
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

#: name -> (tmp_path -> context manager yielding a fresh URL)
UrlFactory = Callable[[Path], AbstractContextManager[str]]


@contextlib.contextmanager
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'spacewalk.db'}"


DATASTORES: dict[str, UrlFactory] = {"sqlite": sqlite_url}
QUEUES: dict[str, UrlFactory] = {"sqlite": sqlite_url}

for _name in ("backend_postgres", "backend_redis", "backend_beanstalkd"):
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue
    DATASTORES.update(getattr(_module, "DATASTORES", {}))
    QUEUES.update(getattr(_module, "QUEUES", {}))


# spawn, not fork: a fork of a process with threads is unsafe, and spawn is
# what macOS and Windows do anyway
SPAWN = multiprocessing.get_context("spawn")


def _close(obj: object) -> None:
    close = getattr(obj, "close", None)
    if close is not None:
        close()


def _run_processes(
    target: Callable[..., None], args: list[tuple[Any, ...]]
) -> list[Any]:
    """Run ``target(*a, results)`` in a process for each ``a``; return what
    each put on ``results``."""
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*a, results)) for a in args]
    for proc in procs:
        proc.start()
    try:
        out = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    errors_ = [r[1] for r in out if isinstance(r, tuple) and r and r[0] == "error"]
    assert not errors_, errors_[0]
    return out


def _reporting(func: Callable[..., Any]) -> Callable[..., None]:
    """Put ``func``'s result, or its traceback, on the last argument."""

    @functools.wraps(func)
    def wrapper(*args: Any) -> None:
        results = args[-1]
        try:
            results.put(func(*args[:-1]))
        except BaseException:
            results.put(("error", traceback.format_exc()))
            raise

    return wrapper


def _increment(store: Any, key: str, times: int) -> int:
    """Add 1 to ``key``'s count ``times`` times; return the CAS conflicts."""
    conflicts = 0
    for _ in range(times):
        while True:
            value, cas = store.read_with_cas(key)
            assert isinstance(value, dict)
            value["count"] += 1
            try:
                store.update_with_cas(key, value, cas)
                break
            except store.casException:
                conflicts += 1
    return conflicts
