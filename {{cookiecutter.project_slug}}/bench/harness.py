"""Shared pieces of the benchmarks: real services, worker processes, statistics and the report."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from {{ cookiecutter.project_slug }} import pools

from support.servers import (
    PACKAGE,
    PROJECT_DIR,
    Process,
    postgres_server,
    rabbitmq_server,
    redis_server,
    wait_until,
)

BENCH_SETTINGS = "bench.settings"


@dataclass
class Stack:
    """Real Redis and PostgreSQL started for one benchmark run, and the environment that reaches them."""

    workdir: Path
    redis_url: str
    database_url: str
    env: dict[str, str] = field(default_factory=dict)
    #: PostgreSQL's server log (the statement counts read it).
    postgres_log: Path | None = None
    _beats: dict[int, Path] = field(default_factory=dict, repr=False)

    def worker(self, queue: str, *extra: str, env: dict[str, str] | None = None, name: str = "") -> Process:
        """Start ``celery worker -Q queue`` and wait until it consumes."""
        return self.ready(self.spawn(queue, *extra, env=env, name=name))

    def spawn(self, queue: str, *extra: str, env: dict[str, str] | None = None, name: str = "") -> Process:
        """Start ``celery worker -Q queue`` without waiting for it (see ``ready``)."""
        node = name or f"{queue}-{time.monotonic_ns()}"
        beats = self.workdir / "heartbeat" / node
        worker_env = {**self.env, "WORKER_HEARTBEAT_DIR": str(beats), **(env or {})}
        argv = [sys.executable, "-m", "celery", "-A", PACKAGE, "worker", "-Q", queue, "-n", f"{node}@%h", *extra]
        argv += ["-l", "WARNING", "--without-mingle", "--without-gossip"]
        proc = Process(argv, self.workdir / "logs" / f"{node}.log", env=worker_env).start()
        from {{ cookiecutter.project_slug }}.worker import heartbeat  # once stack() has chosen the settings

        self._beats[proc.pid] = heartbeat.heartbeat_path(queue, proc.pid, beats)
        return proc

    def ready(self, proc: Process) -> Process:
        """Wait until the worker ``proc`` consumes (its heartbeat file exists); raise if it exited."""
        beat = self._beats[proc.pid]
        wait_until(lambda: beat.exists() or not proc.alive(), 60, f"worker {beat.parent.name} to start")
        if not proc.alive():
            raise RuntimeError(f"worker {beat.parent.name} exited at start:\n{proc.log()[-3000:]}")
        return proc

    def retire(self, proc: Process, timeout: float = 30) -> None:
        """Stop a worker the way a deploy does, SIGTERM to its main process, then remove what is left.

        An idle worker leaves in a second or two; ``Process.stop`` signals the whole process group,
        which kills the pool children under the worker, and the worker then took up to the 15 s
        before ``stop`` escalates to SIGKILL.
        """
        if proc.alive():
            proc.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        proc.stop()


#: What ``stack(broker=...)`` can start as the broker.
BROKERS = ("redis", "rabbitmq")


@contextlib.contextmanager
def stack(broker: str = "redis") -> Iterator[Stack]:
    """Start Redis, PostgreSQL (and RabbitMQ as the broker) on loopback, migrate, and point this process at them.

    With RabbitMQ, Redis keeps the results and the benchmark's completion counter, as the README advises.
    """
    if broker not in BROKERS:
        raise ValueError(f"Unknown broker {broker!r}; choose one of {', '.join(BROKERS)}.")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    pgdir = Path(tempfile.mkdtemp(prefix="pg-"))
    with contextlib.ExitStack() as services:
        # Each run's data, logs and database take 60-100 MB: gone once the services stopped (LIFO), unless kept.
        services.callback(_remove, workdir, pgdir)
        redis_url = services.enter_context(redis_server(workdir / "redis"))
        db = services.enter_context(postgres_server(pgdir))
        broker_env = {"CELERY_BROKER_URL": redis_url}
        if broker == "rabbitmq":
            # The benchmark runs the registry's own limits: the server needs the consumer timeout they derive.
            timeout = pools.consumer_timeout()
            node = services.enter_context(rabbitmq_server(workdir / "rabbitmq", consumer_timeout=timeout))
            broker_env = {
                "CELERY_BROKER_URL": node.url,
                "CELERY_RESULT_BACKEND": redis_url,
                "RABBITMQ_CONSUMER_TIMEOUT": str(timeout),
                "RABBITMQ_MANAGEMENT_URL": node.management_url,
            }
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": BENCH_SETTINGS,
            "DATABASE_URL": db,
            **broker_env,
            "BENCH_REDIS_URL": redis_url,
            "RUN_DIR": str(workdir / "run"),
            "PYTHONUNBUFFERED": "1",
        }
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=PROJECT_DIR, env=env, check=True
        )
        os.environ.update(
            {k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "RUN_DIR", "BENCH_REDIS_URL", *broker_env)}
        )
        import django

        django.setup()
        yield Stack(workdir, redis_url, db, env, postgres_log=pgdir / "postgres.log")


def _remove(*dirs: Path) -> None:
    """Delete the run's temporary directories, or name them when ``BENCH_KEEP_DIRS=1`` asks to keep them."""
    if os.environ.get("BENCH_KEEP_DIRS") == "1":
        print(f"kept: {', '.join(map(str, dirs))}", file=sys.stderr)
        return
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


def empty_tables(*tables: str) -> None:
    """Empty ``tables`` (and what references them) before a measurement, leaving no dead rows behind.

    A DELETE left each drain's rows dead in the heap and its indexes until autovacuum came by, at a moment of its
    choosing: the next system's drain waded through them or not, and one repetition of a 5,000-task drain ran at
    a sixth of the others' rate.
    """
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        # TRUNCATE waits for every lock on the table: a session left in a transaction fails the run, not hangs it.
        cursor.execute("SET LOCAL lock_timeout = '10s'")
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


def analyze(cursor: Any, *tables: str) -> None:
    """Refresh the planner's statistics of ``tables`` once a prefill wrote them (inside its transaction, if any).

    Without it a drain starts on the statistics of an empty table and may switch plans when autovacuum's
    analyze lands in the middle of it.
    """
    for table in tables:
        cursor.execute(f"ANALYZE {table}")


def repeat(times: int, measure: Callable[[], float]) -> list[float]:
    """Call ``measure`` ``times`` times and return the values."""
    return [measure() for _ in range(times)]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Return the median and spread (min, max) of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def percentile(values: Sequence[float], pct: float) -> float:
    """Return the ``pct`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def machine() -> dict[str, Any]:
    """Describe the machine and versions the figures were measured on."""
    import importlib.metadata

    import celery
    import django

    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    rabbitmq = subprocess.run(["dpkg-query", "-W", "rabbitmq-server"], capture_output=True, text=True, check=False)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": f"{os.cpu_count()} cores, {platform.machine()}",
        "python": platform.python_version(),
        "django": django.__version__,
        "celery": celery.__version__,
        # kombu-stubs declares no __version__; the installed distribution's version is the same string.
        "kombu": importlib.metadata.version("kombu"),
        "redis": redis_version.split()[2].removeprefix("v=") if redis_version else "?",
        "rabbitmq": rabbitmq.stdout.split()[-1] if rabbitmq.returncode == 0 else "?",
    }
