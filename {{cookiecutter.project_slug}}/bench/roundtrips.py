"""Scenario: PostgreSQL statements per task and per enqueue, counted in the server's own statement log."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from celery.utils.nodenames import host_format
from django.db import connection

from .harness import Stack, percentile
from .throughput import _consume, _drain_rate, _prefill_idempotent, _prefill_plain, _reset

#: A statement line of PostgreSQL's log (log_statement = 'all', default log_line_prefix): a simple query, or the
#: execution of a prepared one (``execute _pg3_0: UPDATE ...``), whose parse and bind are not logged.
STATEMENT = re.compile(r"\bLOG:  (?:statement|execute [^:]+): (.*)$")
#: The project's tables, by the prefix of their app.
TABLE = re.compile(r"\b(?:idempotency|django|jobs|claimcheck)_\w+")


@contextlib.contextmanager
def _statement_log() -> Iterator[None]:
    """Log every statement the server runs (the bench's own server: its superuser is the app's)."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER SYSTEM SET log_statement = 'all'")
        cursor.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)  # the postmaster signals its backends; let them reread the file
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER SYSTEM RESET log_statement")
            cursor.execute("SELECT pg_reload_conf()")


def _kind(statement: str) -> str:
    """Name a statement by what it does: its verb and first table, or itself when short (BEGIN, SELECT 1)."""
    words = statement.split()
    if len(words) <= 2:
        return statement.strip().rstrip(";")
    table = TABLE.search(statement)
    return f"{words[0].upper()} {table.group(0) if table else ''}".strip()


def _server_usage(stack: Stack) -> tuple[float, float]:
    """Return the bench server's WAL position (bytes) and the CPU seconds its processes used so far.

    Both count what the server did, whatever else loads the machine: figures to compare across runs.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')")
        (wal,) = cursor.fetchone() or (0,)
    assert stack.postgres_log is not None
    postmaster = int((stack.postgres_log.parent / "pgdata" / "postmaster.pid").read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    # The postmaster's own time and its reaped children's (cutime, cstime), plus each live backend's.
    pids = [postmaster, *(int(p) for p in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split())]
    used = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used += sum(int(v) for v in fields[11 : 15 if pid == postmaster else 13]) / ticks
    return float(wal), used


def _count(stack: Stack, run: Callable[[], object], per: int) -> dict[str, Any]:
    """Run ``run`` and return the statements the server logged meanwhile, per call, by kind, with its WAL and CPU."""
    log = stack.postgres_log
    assert log is not None
    start = log.stat().st_size
    wal, cpu = _server_usage(stack)
    run()
    time.sleep(0.5)  # the log collector writes what the last statements logged
    wal_after, cpu_after = _server_usage(stack)
    with log.open(errors="replace") as lines:
        lines.seek(start)
        kinds = collections.Counter(_kind(m.group(1)) for line in lines if (m := STATEMENT.search(line)))
    total = sum(kinds.values())
    # The worker's liveness thread writes every few seconds whatever runs: it shows up as a small fraction.
    breakdown = ", ".join(f"{kind} {n / per:.2f}" for kind, n in kinds.most_common())
    return {
        "statements per call": total / per,
        "WAL bytes per call": (wal_after - wal) / per,
        "server CPU ms per call": (cpu_after - cpu) / per * 1000,
        "by kind (per call)": breakdown,
    }


def _round_trip_ms(samples: int = 2000) -> dict[str, float]:
    """Return the p50 of one ``SELECT 1`` through Django's cursor from this process: a round trip's floor."""
    timings = []
    with connection.cursor() as cursor:
        for _ in range(samples):
            started = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            timings.append(time.perf_counter() - started)
    return {"p50_ms": percentile(timings, 50) * 1000, "p99_ms": percentile(timings, 99) * 1000, "n": samples}


def roundtrips(stack: Stack, count: int) -> dict[str, Any]:
    """Count the statements of ``count`` plain tasks, idempotent tasks and ``enqueue()`` calls on one worker."""
    from .tasks import noop_idempotent

    worker = stack.worker("default", name="bench-roundtrips")
    node = host_format("bench-roundtrips@%h")
    result: dict[str, Any] = {}
    try:
        _consume(node, on=False)
        with _statement_log():
            for label, prefill in (("plain task", _prefill_plain), ("IdempotentTask", _prefill_idempotent)):
                _reset(stack)
                prefill(0, count)
                result[label] = _count(stack, lambda: _drain_rate(stack, worker, node, count), count)
            _reset(stack)
            result["IdempotentTask.enqueue()"] = _count(
                stack, lambda: [noop_idempotent.enqueue(i) for i in range(count)], count
            )
            redis.Redis.from_url(stack.redis_url).delete("default")
        result["SELECT 1 from the bench process"] = _round_trip_ms()
    finally:
        stack.retire(worker)
    return result
