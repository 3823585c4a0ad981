"""Measure the overhead of the idempotent base task against a plain task through one real worker.

    uv run python scripts/bench_idempotency.py [--count 2000] [--repeats 3]

Starts Redis and PostgreSQL on loopback, fills the default queue with ``count`` no-op tasks of one
kind, starts one default-pool worker (the registry's settings) and times how fast it drains them;
the kinds take turns, so each repeat compares them under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from tests.services import PACKAGE, Process, postgres_server, redis_server, wait_until  # noqa: E402

KINDS = ("plain delay()", "IdempotentTask enqueue()", "IdempotentTask delay()")


def drain_rate(env: dict[str, str], workdir: Path, count: int, name: str) -> float:
    """Start one default-pool worker on the filled queue; return tasks completed per second."""
    import redis

    from tests.tasks_idempotency import NOOP_DONE_KEY

    client = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    argv = [sys.executable, "-m", "celery", "-A", PACKAGE, "worker", "-Q", "default", "-n", f"{name}@%h"]
    argv += ["-l", "WARNING", "--without-mingle", "--without-gossip"]
    worker = Process(argv, workdir / "logs" / f"{name}.log", env=env).start()
    try:
        wait_until(lambda: int(client.get(NOOP_DONE_KEY) or 0) >= 1 or not worker.alive(), 120, "a first task")
        started, first = time.monotonic(), int(client.get(NOOP_DONE_KEY) or 0)
        wait_until(lambda: int(client.get(NOOP_DONE_KEY) or 0) >= count or not worker.alive(), 900, "the queue")
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log()[-3000:]}")
        return (count - first) / (time.monotonic() - started)
    finally:
        worker.stop()


def main() -> None:
    """Run the measurement and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="no-op tasks per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per kind")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-idempotency-"))
    with redis_server(workdir / "redis") as redis_url, postgres_server(Path(tempfile.mkdtemp(prefix="pg-"))) as db:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": f"{PACKAGE}.settings.test",
            "DATABASE_URL": db,
            "CELERY_BROKER_URL": redis_url,
            "RUN_DIR": str(workdir / "run"),
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=PROJECT_DIR, env=env, check=True)
        os.environ.update(
            {k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL", "RUN_DIR")}
        )
        import django

        django.setup()
        import redis

        from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord

        from tests.tasks_idempotency import noop_idempotent, noop_plain

        senders: dict[str, Callable[[int], object]] = {
            KINDS[0]: noop_plain.delay,
            KINDS[1]: noop_idempotent.enqueue,
            KINDS[2]: noop_idempotent.delay,
        }
        rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for repeat in range(args.repeats):
            for number, (kind, send) in enumerate(senders.items()):
                redis.Redis.from_url(redis_url).flushdb()
                TaskRecord.objects.all().delete()
                for i in range(args.count):
                    send(repeat * args.count + i)
                rates[kind].append(drain_rate(env, workdir, args.count, f"bench-{repeat}-{number}"))
                print(f"{kind}: {rates[kind][-1]:.0f} tasks/s", file=sys.stderr)
        medians = {kind: statistics.median(values) for kind, values in rates.items()}
        report = {
            "count": args.count,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "tasks_per_second": {
                kind: {"median": round(medians[kind], 1), "all": [round(v, 1) for v in rates[kind]]} for kind in KINDS
            },
            "idempotent / plain": {kind: round(medians[kind] / medians[KINDS[0]], 3) for kind in KINDS[1:]},
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
