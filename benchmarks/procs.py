"""Run benchmark code in forked children, so that the driver process never
opens a datastore or queue connection a child could inherit."""
from __future__ import annotations

import multiprocessing
import traceback
from typing import Any, Callable


def _call(conn: Any, start: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        if start is not None:
            start.wait(120)
        conn.send(("ok", fn(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def in_children(
    fn: Callable[..., Any], args_list: list[tuple[Any, ...]], timeout: float, together: bool
) -> list[Any]:
    """Run ``fn(*args)`` in one forked child per ``args`` and return the
    results in order. With ``together`` the children are all forked (and
    their imports done) before any of them starts ``fn``.

    :raise RuntimeError: a child raised, or did not answer in ``timeout`` s.
    """
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event() if together else None
    procs, pipes = [], []
    for args in args_list:
        here, there = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_call, args=(there, start, fn, args), daemon=True)
        proc.start()
        there.close()
        procs.append(proc)
        pipes.append(here)
    if start is not None:
        start.set()
    results = []
    try:
        for here in pipes:
            if not here.poll(timeout):
                raise RuntimeError(f"a benchmark child gave no answer in {timeout:.0f} s")
            status, value = here.recv()
            if status != "ok":
                raise RuntimeError(f"a benchmark child failed:\n{value}")
            results.append(value)
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    return results


def in_child(fn: Callable[..., Any], *args: Any, timeout: float = 300) -> Any:
    """``fn(*args)`` in one forked child."""
    return in_children(fn, [args], timeout, together=False)[0]
