"""Two worker hosts and a services host, each a network namespace: one worker host is lost mid-task."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from support.netns import Host, NamespacesUnavailableError, network
from support.servers import PACKAGE, PROJECT_DIR, Process, postgres_server, redis_server, unavailable, wait_until

pytestmark = [pytest.mark.workers, pytest.mark.timeout(300)]

#: The README's bound: a row held by a node that stopped proving it is alive is reclaimed within this many seconds.
LIVENESS_BOUND = 30.0
#: Seconds the first attempt waits after writing its effect, inside its transaction: the host is cut off then.
PAUSE_AFTER_WRITE = 8.0
#: Enqueues the atomic test task: it writes its effect, then waits, then the success write commits both.
ENQUEUE = """
import sys
import django
django.setup()
from tests.tasks.idempotency import atomic_effect
print(atomic_effect.using(key=sys.argv[1]).enqueue(sys.argv[1], pause_after_write=float(sys.argv[2])).key)
"""


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    """Return a services host and two worker hosts on a network of their own (and the test's link into it)."""
    try:
        with network(["services", "worker-1", "worker-2"]) as created:
            yield created
    except NamespacesUnavailableError as exc:
        unavailable(f"network namespaces cannot be created here: {exc}")


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the services host's database and return its rows."""
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def row_of(url: str, key: str) -> dict[str, Any]:
    """Return the status row of ``key`` as the database has it now (empty before it exists)."""
    rows = query(url, "SELECT status, owner, attempts FROM idempotency_taskrecord WHERE key = %s", key)
    return dict(zip(("status", "owner", "attempts"), rows[0], strict=True)) if rows else {"status": "", "owner": ""}


def status_of(url: str, key: str) -> str:
    """Return the status of the row of ``key`` (empty before it exists)."""
    return str(row_of(url, key)["status"])


def test_a_worker_host_cut_off_mid_task_is_recovered_by_the_other_and_its_late_write_discarded(hosts, tmp_path):
    services = hosts["services"]
    with (
        redis_server(tmp_path / "redis", services.address, services.argv()) as broker,
        postgres_server(Path(tempfile.mkdtemp(prefix="pg-")), services.address, services.argv()) as database,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
        env.update(
            # The registry's own time limits and the deployed liveness timings: no short lease to lean on.
            DJANGO_SETTINGS_MODULE="tests.idempotency.multihost_settings",
            DATABASE_URL=database,
            CELERY_BROKER_URL=broker,
            CELERY_RESULT_BACKEND=broker,
            PYTHONUNBUFFERED="1",
            REMAP_SIGTERM="SIGQUIT",
        )
        manage(["migrate", "--noinput"], env, tmp_path)
        workers = {name: start_worker(hosts[name], name, env, tmp_path) for name in ("worker-1", "worker-2")}
        try:
            key = f"multihost-{uuid.uuid4().hex[:8]}"
            python(ENQUEUE, [key, str(PAUSE_AFTER_WRITE)], env, tmp_path)
            wait_until(lambda: f"effect {key} written" in logs(workers), 30, "a worker to write the effect")
            holder = row_of(database, key)["owner"]
            lost = "worker-1" if holder.startswith("worker-1@") else "worker-2"
            survivor = "worker-2" if lost == "worker-1" else "worker-1"
            assert holder.startswith(f"{lost}@"), holder

            # Cut off mid-task: its effect is written but not committed, its liveness renewals stop.
            hosts[lost].cut()
            cut_at = time.monotonic()
            wait_until(
                lambda: row_of(database, key)["owner"].startswith(f"{survivor}@"),
                LIVENESS_BOUND + 15,
                "the other host to reclaim the row",
            )
            reclaimed_after = time.monotonic() - cut_at
            print(f"\nworker host lost mid-task: its row reclaimed by the other host after {reclaimed_after:.1f}s")
            assert reclaimed_after <= LIVENESS_BOUND

            # The lost host comes back: its success write meets the owner fence, and its effect rolls back.
            hosts[lost].reconnect()
            wait_until(lambda: status_of(database, key) == "succeeded", 120, "the row to succeed")
            wait_until(
                lambda: "its outcome is discarded" in workers[lost].log(), 60, "the late outcome to be discarded"
            )
            done = row_of(database, key)
            assert done["owner"].startswith(f"{survivor}@")
            effects = query(database, "SELECT worker FROM effects_effect WHERE key = %s", key)
            assert [worker.split("@")[0] for (worker,) in effects] == [survivor], effects
        finally:
            for proc in workers.values():
                proc.stop(timeout=10)


def logs(workers: dict[str, Process]) -> str:
    """Return what every worker logged so far."""
    return "".join(proc.log() for proc in workers.values())


def manage(args: list[str], env: dict[str, str], tmp_path: Path) -> None:
    """Run ``manage.py args`` from the test's own host."""
    python(
        "import sys; from django.core.management import execute_from_command_line as run; run(sys.argv)",
        args,
        env,
        tmp_path,
    )


def python(code: str, args: list[str], env: dict[str, str], tmp_path: Path) -> str:
    """Run ``code`` with ``args`` from the test's own host; return what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=PROJECT_DIR,
        env={**env, "RUN_DIR": str(tmp_path / "run-test")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def start_worker(host: Host, name: str, env: dict[str, str], tmp_path: Path) -> Process:
    """Start a one-at-a-time worker of the default pool on ``host``, named ``name``, and wait until it is ready."""
    argv = [sys.executable, "-m", "celery", "-A", PACKAGE, "worker", "-Q", "default", "-n", f"{name}@%h"]
    argv += ["-c", "1", "--prefetch-multiplier", "1", "-l", "INFO", "--without-mingle", "--without-gossip"]
    proc = Process(host.argv(*argv), tmp_path / f"{name}.log", env={**env, "RUN_DIR": str(tmp_path / name)}).start()
    wait_until(lambda: " ready." in proc.log() or not proc.alive(), 60, f"{name}'s worker to be ready")
    assert proc.alive(), proc.log()[-3000:]
    return proc
