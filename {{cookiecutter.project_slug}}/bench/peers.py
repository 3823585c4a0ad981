"""Scenario peers: no-op tasks on 2 worker processes, this project's tasks against django-tasks-db and procrastinate."""

# The peers come from the bench-peers dependency group (make bench installs it). The subprocesses that need
# their Django apps (workers, bench.peer_prefill) run on bench.peer_settings; this process stays on
# bench.settings, which the other scenarios share.

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import redis
from celery.utils.nodenames import host_format

from support.servers import PROJECT_DIR, Process, wait_until

from . import peer_prefill
from .harness import Stack, empty_tables, summary
from .throughput import _consume, _prefill_idempotent, _prefill_plain, _reset

PEER_SETTINGS = "bench.peer_settings"
PEER_PACKAGES = ("django-tasks-db", "procrastinate")
#: Worker processes per system, the figure the comparison holds equal.
PROCESSES = 2
#: db_worker's sleep when it found no task (its default is 1 s): both processes start on a prefill within 0.1 s.
DB_WORKER_INTERVAL = 0.1
#: Tasks of each system drained untimed before the repetitions.
WARMUP_TASKS = 200

PLAIN = "plain @shared_task, project settings"
IDEMPOTENT = "IdempotentTask (status row), project settings"
DB = "django-tasks-db db_worker"
PROCRASTINATE = "procrastinate worker"
SETTINGS = {
    PLAIN: "one worker, the default pool: prefork -c 2, prefetch 4, acks late (Redis broker); "
    "prefilled by apply_async() over one producer, the worker paused",
    IDEMPOTENT: "the same worker; one status row per task in PostgreSQL, prefilled by enqueue_many()",
    DB: f"{PROCESSES} `manage.py db_worker` processes, --interval {DB_WORKER_INTERVAL}, --no-startup-delay, -v 0; "
    "prefilled by enqueue() per task in one transaction",
    PROCRASTINATE: f"{PROCESSES} `manage.py procrastinate worker` processes, --concurrency 1 each (sync task in a "
    "thread), LISTEN/NOTIFY on, jobs kept (no --delete-jobs), logging at WARNING (bench.settings' LOGGING); "
    "prefilled by batch_defer() in one transaction",
}
#: What every system shares, from the harness.
COMMON = (
    "one PostgreSQL database for all (the harness's server: fsync=off, full_page_writes=off); "
    "each no-op task increments one Redis counter; rate from the first completion seen to the last"
)
PREFILL_SYSTEMS = {DB: "db", PROCRASTINATE: "procrastinate"}
#: The rows each peer leaves: emptied before each measurement, as throughput empties the status table.
PEER_TABLES = {system: peer_prefill.TABLES[name] for system, name in PREFILL_SYSTEMS.items()}


def _rate(stack: Stack, count: int, start: Callable[[], None], procs: list[Process]) -> float:
    """Call ``start`` (which makes the queued tasks runnable) and return completed tasks per second.

    The clock runs from the first completion seen to the last; the completions already done when the first
    is seen are not counted, since a prefill subprocess's commit starts the peers before this loop polls.
    """
    from .tasks import DONE_KEY

    client = redis.Redis.from_url(stack.redis_url)

    def check(what: str) -> None:
        if time.monotonic() > deadline or not all(p.alive() for p in procs):
            logs = "\n".join(p.log()[-1500:] for p in procs)
            raise TimeoutError(f"{what}:\n{logs}")

    deadline = time.monotonic() + 600
    start()
    while (seen := int(client.get(DONE_KEY) or 0)) < 1:
        check("no task completed")
        time.sleep(0.005)
    first = time.monotonic()
    while (done := int(client.get(DONE_KEY) or 0)) < count:
        check(f"only {done}/{count} tasks completed")
        time.sleep(0.005)
    return (count - seen) / (time.monotonic() - first)


def _clear_peers() -> None:
    """Empty the peers' task tables (no peer task is queued or running by now)."""
    empty_tables(*PEER_TABLES.values())


class _Prefill:
    """A resident subprocess on the peers' settings that queues a peer's tasks in one transaction on request.

    Resident, since a Django start on two busy cores takes seconds: once per scenario, not once per measurement.
    """

    def __init__(self, stack: Stack) -> None:
        env = {**stack.env, "DJANGO_SETTINGS_MODULE": PEER_SETTINGS}
        self.log_path = stack.workdir / "logs" / "peer-prefill.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            argv = [sys.executable, "-m", "bench.peer_prefill"]
            self.proc = subprocess.Popen(
                argv, cwd=PROJECT_DIR, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )

    def __call__(self, system: str, first: int, count: int) -> None:
        """Queue ``count`` tasks of ``system`` and return once they committed."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{PREFILL_SYSTEMS[system]} {first} {count}\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ok":
            raise RuntimeError(f"the prefill failed:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def close(self) -> None:
        """End the subprocess (end of its input)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _start_peers(stack: Stack) -> dict[str, list[Process]]:
    """Start each peer's worker processes, idle until a prefill commits."""
    env = {**stack.env, "DJANGO_SETTINGS_MODULE": PEER_SETTINGS}
    manage = [sys.executable, "manage.py"]
    db_args = ["db_worker", "--backend", "db", "--queue-name", "default", "--interval", str(DB_WORKER_INTERVAL)]
    db_args += ["--no-startup-delay", "--no-reload", "-v", "0"]
    pc_args = ["procrastinate", "worker", "--queues", "default", "--concurrency", "1"]
    logs = stack.workdir / "logs"
    return {
        DB: [
            Process([*manage, *db_args, "--worker-id", f"bench-db-{n}"], logs / f"db-worker-{n}.log", env=env).start()
            for n in range(PROCESSES)
        ],
        PROCRASTINATE: [
            Process([*manage, *pc_args, "--name", f"bench-pc-{n}"], logs / f"procrastinate-{n}.log", env=env).start()
            for n in range(PROCESSES)
        ],
    }


def _workers_seen(system: str) -> int:
    """Return how many of a peer's worker processes took a task of the last drain (or are registered)."""
    from django.db import connection

    query = {
        DB: f"SELECT count(DISTINCT w) FROM {PEER_TABLES[DB]}, jsonb_array_elements_text(worker_ids) w",  # noqa: S608
        PROCRASTINATE: "SELECT count(*) FROM procrastinate_workers",
    }[system]
    with connection.cursor() as cursor:
        cursor.execute(query)
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def _versions() -> str:
    """Name the versions the figures were measured with, the PostgreSQL server's among them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        row = cursor.fetchone()
    packages = ("django", "celery", "kombu", *PEER_PACKAGES, "psycopg")
    found = [f"{name} {importlib.metadata.version(name)}" for name in packages]
    return ", ".join([*found, f"PostgreSQL {row[0] if row else '?'}"])


def peers(stack: Stack, count: int, repeats: int) -> dict[str, Any]:
    """Measure no-op tasks per second on 2 worker processes for each system, as ratios to the plain Celery task.

    Each repetition runs the four systems back to back on the same prefilled count; the ratio to the plain
    task of the same repetition cancels the machine's drift. Every worker stays up for the whole scenario:
    the Celery one paused (``cancel_consumer``) while its queue fills, the peers idle until the prefill's
    transaction commits.
    """
    missing = [name for name in PEER_PACKAGES if importlib.util.find_spec(name.replace("-", "_")) is None]
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed: run it as `uv run --group bench-peers` (make bench)"}
    env = {**stack.env, "DJANGO_SETTINGS_MODULE": PEER_SETTINGS}
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
    subprocess.run(migrate, cwd=PROJECT_DIR, env=env, check=True)

    # The peers and the prefill start first: their Django starts overlap the Celery worker's.
    procs = _start_peers(stack)
    prefill = _Prefill(stack)
    node = host_format("bench-peers@%h")
    rates: dict[str, list[float]] = {system: [] for system in SETTINGS}

    def measure(system: str, first: int, n: int) -> float:
        _reset(stack)
        _clear_peers()
        if system in PREFILL_SYSTEMS:
            return _rate(stack, n, lambda: prefill(system, first, n), procs[system])
        (_prefill_plain if system == PLAIN else _prefill_idempotent)(first, n)
        try:
            return _rate(stack, n, lambda: _consume(node, on=True), procs[system])
        finally:
            _consume(node, on=False)

    try:
        procs[PLAIN] = procs[IDEMPOTENT] = [stack.worker("default", name="bench-peers")]
        _consume(node, on=False)
        wait_until(lambda: _workers_seen(PROCRASTINATE) == PROCESSES, 60, "the procrastinate workers to register")
        # First drains run slow (imports, connections, caches); the db workers also prove here that both took part.
        warmup = min(count, WARMUP_TASKS)
        for system in SETTINGS:
            measure(system, -warmup, warmup)
            if system == DB and (seen := _workers_seen(DB)) != PROCESSES:
                raise RuntimeError(f"{seen} of {PROCESSES} db_worker processes took a warm-up task")
        for repeat in range(repeats):
            for system in SETTINGS:
                rates[system].append(measure(system, repeat * count, count))
        versions = _versions()
    finally:
        prefill.close()
        workers = list({id(p): p for system in SETTINGS for p in procs.get(system, [])}.values())
        # SIGTERM to all first: they leave in parallel, then retire waits for each in turn.
        for proc in workers:
            if proc.alive():
                proc.signal(signal.SIGTERM)
        for proc in workers:
            stack.retire(proc)
    print(json.dumps({"tasks/s per repetition": rates}), flush=True)
    result: dict[str, Any] = {}
    for system, values in rates.items():
        ratios = summary([rate / plain for rate, plain in zip(values, rates[PLAIN], strict=True)])
        spread = summary(values)
        result[system] = {
            "tasks/s median": spread["median"],
            "tasks/s min": spread["min"],
            "tasks/s max": spread["max"],
            "/ plain median": ratios["median"],
            "/ plain min": ratios["min"],
            "/ plain max": ratios["max"],
            "n": spread["n"],
        }
    result["tasks per measurement"] = count
    result["versions"] = versions
    result["settings, all"] = COMMON
    result.update({f"settings, {system}": text for system, text in SETTINGS.items()})
    return result
