"""The local stack of `make dev` runs with no service installed: web, a worker per pool, beat and Flower."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker import heartbeat
from {{ cookiecutter.project_slug }}.worker.devstack import RESTART_LIMIT, kill_wait

from support.servers import PROJECT_DIR, Process, find_binary, free_port, port_open, unavailable, wait_until
from tests.worker import devstack_settings

PACKAGE = "{{ cookiecutter.project_slug }}"
#: Variables that would point the stack at real services; the embedded stack runs without any of them.
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "EMAIL_URL",
)
#: Sends Celery's built-in ``celery.accumulate`` (it returns its arguments) to each pool's queue and waits
#: for the answers: every pool answers with or without the demo app.
SEND_TO_EACH_POOL = """
import json, sys
import django
django.setup()
from celery import current_app
sent = {name: current_app.send_task("celery.accumulate", args=[name], queue=name) for name in json.loads(sys.argv[1])}
print(json.dumps({name: {"id": result.id, "result": result.get(timeout=90)} for name, result in sent.items()}))
"""
{%- if cookiecutter.demo_flows == "y" %}
#: Sends the demo's greeting e-mail, which the console backend writes to the emails worker's stdout.
SEND_GREETING = """
import django
django.setup()
from {{ cookiecutter.project_slug }}.demo.tasks import send_greeting
print(send_greeting.enqueue("someone@example.com").status)
"""
{%- endif %}
#: Whether the password in argv signs in as the demo user.
SIGNS_IN = """
import sys
import django
django.setup()
from django.contrib.auth import authenticate
print(authenticate(username="demo", password=sys.argv[1]) is not None)
"""
#: Lines that read as trouble to a user of `make dev`, and are not.
NOISE = (
    "No hostname was supplied",  # kombu, of the filesystem broker, which has no host
    "WARNING celery.redirected",  # a worker's stdout (the console e-mail backend) logged as a warning
    "lifespan",  # uvicorn: "ASGI 'lifespan' protocol appears unsupported."
    '/favicon.ico HTTP/1.1" 404',
)


def stack_env(run_dir: Path, web_port: int, flower_port: int) -> dict[str, str]:
    """Return the environment of `make dev`'s processes: embedded defaults under ``run_dir``, free ports."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES and not k.startswith("PYTEST_")}
    env.update(
        DJANGO_SETTINGS_MODULE=f"{PACKAGE}.config.settings.local",
        RUN_DIR=str(run_dir),
        WEB_PORT=str(web_port),
        FLOWER_PORT=str(flower_port),
        FLOWER_USER="flower",
        FLOWER_PASSWORD="devstack-test-password",
        PYTHONUNBUFFERED="1",
        # The Procfile's commands (celery, uvicorn) come from this virtualenv, as under `uv run`.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    """Return the HTTP status of a GET of ``url`` on loopback (0 when nothing answers)."""
    request = urllib.request.Request(url)  # noqa: S310 - a loopback URL built by the test
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the project directory and fail the test with its output if it fails."""
    done = subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture
def devstack(tmp_path: Path) -> Iterator[tuple[Process, dict[str, str]]]:
    """Migrate, then run the Procfile with honcho as `make dev` does; stop it at the end of the test."""
    env = stack_env(tmp_path / "run", free_port(), free_port())
    run([sys.executable, "manage.py", "migrate", "--noinput"], env)
    info = run([sys.executable, "manage.py", "stackinfo"], env).stdout
    assert "filesystem://" in info, info
    assert f"sqlite3 {tmp_path / 'run' / 'db.sqlite3'}" in info, info
    # As `make dev` does: the password waits, in a private file, for the summary printed once the stack answers.
    assert "printed once the stack answers" in run([sys.executable, "manage.py", "demouser", "--hand-over"], env).stdout
    stack = start_stack(env, tmp_path / "honcho.log", tmp_path / "empty.env")
    yield stack, env
    stack.stop(timeout=60)


def start_stack(env: dict[str, str], log: Path, env_file: Path, *processes: str) -> Process:
    """Start the Procfile's processes (all, or those named) with make dev's runner."""
    # An empty env file: honcho must not add the project's .env, the settings read it themselves.
    env_file.write_text("")
    runner = [sys.executable, "-m", f"{PACKAGE}.worker.devstack", "-f", "Procfile", "-d", str(PROJECT_DIR)]
    return Process([*runner, "-e", str(env_file), *processes], log, env=env).start()


@pytest.mark.workers
def test_make_dev_stack_runs_every_process_without_services(devstack, tmp_path):
    stack, env = devstack
    web, flower = f"http://127.0.0.1:{env['WEB_PORT']}", f"http://127.0.0.1:{env['FLOWER_PORT']}"
    beats = Path(env["RUN_DIR"]) / "heartbeat"

    def up() -> bool:
        assert stack.alive(), f"honcho exited early:\n{stack.log()[-4000:]}"
        alive = all(heartbeat.check(p.name, beats)[0] for p in pools.POOLS)
        return alive and http_status(f"{web}/healthz") == 200 and http_status(f"{flower}/healthcheck") == 200

    wait_until(up, 180, "web, Flower and every pool's worker heartbeat", interval=0.5)
    wait_until(lambda: "stop:    Ctrl+C" in stack.log(), 30, "the summary", interval=0.5)
    summary = stack.log().split("The stack answers", 1)
    assert len(summary) == 2, f"no summary, or one saying what does not answer:\n{stack.log()[-4000:]}"
    assert f"web:     {web}/" in summary[1]
    assert f"admin:   {web}/admin/" in summary[1]
    assert f"flower:  {flower}/  (user {env['FLOWER_USER']}," in summary[1]
    password = summary[1].split("user:    demo  password: ", 1)[1].split()[0]
    assert run([sys.executable, "-c", SIGNS_IN, password], env).stdout.strip() == "True"
    assert not (Path(env["RUN_DIR"]) / "demo-password").exists()
    assert http_status(f"{web}/favicon.ico") == 204
    assert http_status(f"{flower}/", auth=None) == 401
    assert http_status(f"{flower}/", auth=(env["FLOWER_USER"], env["FLOWER_PASSWORD"])) == 200

    # Each pool's node consumes exactly its own queue, over the filesystem transport's fanout.
    inspected = run([sys.executable, "-m", "celery", "-A", PACKAGE, "inspect", "active_queues", "-j", "-t", "5"], env)
    queues = json.loads(inspected.stdout)
    by_node = {node.split("@")[0]: sorted(q["name"] for q in consumed) for node, consumed in queues.items()}
    assert by_node == {p.name: [p.queue] for p in pools.POOLS}

    names = json.dumps([p.name for p in pools.POOLS])
    sent = run([sys.executable, "-c", SEND_TO_EACH_POOL, names], env, timeout=180)
    results = json.loads(sent.stdout.strip().splitlines()[-1])
    log = stack.log()
    for pool_name, answer in results.items():
        assert answer["result"] == [pool_name], (pool_name, answer)
        received = f"celery.accumulate[{answer['id']}] received"
        lines = [line for line in log.splitlines() if received in line]
        assert lines, f"no worker logged {received}"
        assert all(line.split()[1] == f"worker_{pool_name}.1" for line in lines), lines
{%- if cookiecutter.demo_flows == "y" %}
    run([sys.executable, "-c", SEND_GREETING], env)
    wait_until(lambda: "The emails pool is working." in stack.log(), 60, "the console e-mail in the log")
{%- endif %}

    # Stop as Ctrl-C on `make dev` does: SIGTERM to each process, SIGKILL only for what outlives the grace period.
    worker_pids = [int(path.read_text().split()[0]) for path in beats.glob("*.alive")]
    assert len(worker_pids) == len(pools.POOLS)
    stack.signal(signal.SIGTERM)
    stack.wait(timeout=60)
    wait_until(lambda: not any(pid_alive(pid) for pid in worker_pids), 30, "every worker to exit")
    log = stack.log()
    for name in ("web", "beat", "flower", "summary", *(f"worker_{p.name}" for p in pools.POOLS)):
        assert f"{name}.1 stopped" in log, f"honcho did not report {name} stopped"
    noisy = [line for line in log.splitlines() if any(noise in line for noise in NOISE)]
    assert not noisy, "\n".join(noisy[:20])


def pid_alive(pid: int) -> bool:
    """Return whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


#: Waits until the effect argv[1] of tests.effects exists, or the counter argv[1] reaches argv[2] (at most
#: argv[3] seconds), then prints every counter and effect.
WAIT_FOR = """
import json, sys, time
import django
django.setup()
from tests.effects.models import Counter, Effect
name, value, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
done = lambda: Effect.objects.filter(key=name).exists() or Counter.objects.filter(name=name, value__gte=value).exists()
while time.monotonic() < deadline and not done():
    time.sleep(0.1)
counters = dict(Counter.objects.filter(name__contains=":").values_list("name", "value"))
print(json.dumps({"counters": counters, "effects": sorted(Effect.objects.values_list("key", flat=True))}))
"""
#: Sends a task of argv[1] seconds to the default pool and one of argv[2] seconds to the reports pool
#: (tests/tasks/shutdown.py), and waits until both run.
SEND_LONG_AND_SHORT = """
import sys, time
import django
django.setup()
from tests.effects.models import Counter
from tests.tasks.shutdown import effect_default, effect_reports
effect_default.delay("long", float(sys.argv[1]), 0.2)
effect_reports.delay("short", float(sys.argv[2]))
deadline = time.monotonic() + 60
while time.monotonic() < deadline and Counter.objects.filter(name__in=["started:long", "started:short"]).count() < 2:
    time.sleep(0.05)
"""


def wait_for(env: dict[str, str], name: str, timeout: float, value: int = 1) -> dict[str, Any]:
    """Wait until the effect ``name`` exists or the counter ``name`` reaches ``value``; return counters and effects."""
    return dict(json.loads(run([sys.executable, "-c", WAIT_FOR, name, str(value), str(timeout)], env).stdout))


@pytest.mark.workers
def test_ctrl_c_during_tasks_loses_nothing_and_the_next_start_finishes_them_once(tmp_path):
    # Test settings (tests/tasks imported) with soft shutdowns of 2 s (default) and 7 s (reports): longer than
    # plain honcho's 5 s before SIGKILL, which lost the message a busy worker held on the filesystem broker.
    env = stack_env(tmp_path / "run", free_port(), free_port())
    env["DJANGO_SETTINGS_MODULE"] = "tests.worker.devstack_settings"
    run([sys.executable, "manage.py", "migrate", "--noinput"], env)
    processes = ("worker_default", "worker_reports")
    stack = start_stack(env, tmp_path / "first.log", tmp_path / "empty.env", *processes)
    beats = Path(env["RUN_DIR"]) / "heartbeat"
    wait_until(lambda: all(heartbeat.check(name, beats)[0] for name in ("default", "reports")), 120, "both workers")
    # The long task outlasts the default pool's soft shutdown (it is requeued) and stays under the Procfile's soft
    # time limit (30 s, the registry's); the short one ends within the reports pool's soft shutdown but after
    # 5 s, so its first delivery finishes during the stop, where plain honcho killed it with its message.
    short = devstack_settings.REPORTS_SOFT_SHUTDOWN - 1
    run([sys.executable, "-c", SEND_LONG_AND_SHORT, "20", str(short)], env)

    stack.signal(signal.SIGINT)  # Ctrl-C
    stack.wait(timeout=kill_wait() + 30)
    log = stack.log()
    stopped = wait_for(env, "started:long", 0)
    assert stopped["effects"] == ["short"], log[-4000:]
    assert stopped["counters"]["started:short"] == 1
    assert "SIGKILL" not in log, log[-4000:]

    again = start_stack(env, tmp_path / "second.log", tmp_path / "empty.env", *processes)
    try:
        after = wait_for(env, "long", 90)
    finally:
        again.stop(timeout=kill_wait() + 30)
    assert after["effects"] == ["long", "short"], again.log()[-4000:]
    assert after["counters"]["started:long"] == 2  # cut off by the stop, then run to the end once
    assert after["counters"]["started:short"] == 1
    assert not [name for name in after["counters"] if name.startswith(("duplicate:", "repeat:"))], after


#: Enqueues the idempotent task that records the effect argv[1] after argv[2] seconds on the default pool
#: (tests/tasks/idempotency.py); with argv[3], SIGKILLs that process (Redis) as soon as the task runs.
SEND_DEFAULT = """
import os, signal, sys, time
import django
django.setup()
from tests.effects.models import Counter
from tests.tasks.idempotency import make_effect
make_effect.enqueue(sys.argv[1], float(sys.argv[2]))
if len(sys.argv) > 3:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not Counter.objects.filter(name=f"runs:{sys.argv[1]}").exists():
        time.sleep(0.02)
    os.kill(int(sys.argv[3]), signal.SIGKILL)
"""


def start_redis(port: int, workdir: Path) -> Process:
    """Start redis-server on ``port`` with every write on disk first, so a ``kill -9`` keeps the queues."""
    binary = find_binary("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]
    redis = Process([*argv, "--appendonly", "yes", "--appendfsync", "always"], workdir / "redis.log").start()
    wait_until(lambda: port_open(port), 20, "redis-server to listen")
    return redis


@pytest.mark.workers
def test_the_default_pool_consumes_again_after_redis_is_killed_mid_task_and_restarted(tmp_path):
    port = free_port()
    redis = start_redis(port, tmp_path)
    env = stack_env(tmp_path / "run", free_port(), free_port())
    env.update(
        DJANGO_SETTINGS_MODULE=f"{PACKAGE}.config.settings.test", CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0"
    )
    run([sys.executable, "manage.py", "migrate", "--noinput"], env)
    stack = start_stack(env, tmp_path / "stack.log", tmp_path / "empty.env", "worker_default")
    try:
        wait_until(lambda: heartbeat.check("default", Path(env["RUN_DIR"]) / "heartbeat")[0], 120, "the worker")
        # A 3 s task (the test pool's soft limit is 4 s): Redis is killed the moment it starts, while the
        # worker, which has a free process, waits on Redis for the next message.
        run([sys.executable, "-c", SEND_DEFAULT, "in-flight", "3", str(redis.pid)], env)
        redis.wait(timeout=10)
        redis = start_redis(port, tmp_path)  # the same address, the same append-only file

        # Nobody touches the worker: it reconnects (make dev's runner would start it again if it exited).
        run([sys.executable, "-c", SEND_DEFAULT, "after", "0"], env)
        after = wait_for(env, "after", 90)
        assert "after" in after["effects"], stack.log()[-4000:]
        # kombu's channel close once made the worker exit here (redistransport.py); the same process consumes.
        assert "Unrecoverable error" not in stack.log(), stack.log()[-4000:]
        # The worker stopped the task cut off by the lost connection and Celery acked its message as revoked (a
        # plain task ends there, README); its status row owes the call, and the recovery pass publishes it again.
        after = wait_for(env, "in-flight", 60)
        assert after["effects"] == ["after", "in-flight"], stack.log()[-4000:]
        assert after["counters"]["runs:in-flight"] >= 2, after  # cut off, then run again: one effect
        assert stack.alive()
    finally:
        stack.stop(timeout=kill_wait() + 30)
        redis.stop()
    assert "starting it again" not in stack.log(), stack.log()[-4000:]
    assert not [name for name in after["counters"] if name.startswith("duplicate:")], after


def test_the_runner_restarts_a_worker_that_exits_but_not_one_that_cannot_start(tmp_path):
    # A worker that exits at once every time: started again RESTART_LIMIT - 1 times, then the stack stops.
    (tmp_path / "Procfile").write_text("worker_flaky: exec sh -c 'exit 3'\nweb: exec sleep 600\n")
    (tmp_path / "empty.env").write_text("")
    runner = [sys.executable, "-m", f"{PACKAGE}.worker.devstack", "-f", str(tmp_path / "Procfile"), "-d", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    stack = Process([*runner, "-e", str(tmp_path / "empty.env")], tmp_path / "runner.log", env=env).start()
    try:
        stack.wait(timeout=60)
    finally:
        stack.stop()
    log = stack.log()
    assert log.count("worker_flaky.1 exited (rc=3); starting it again") == RESTART_LIMIT - 1, log
    # The web process is not restarted by the runner: it is stopped with the rest, by SIGTERM, not SIGKILL.
    assert "sending SIGTERM to web.1" in log, log
    assert "SIGKILL" not in log, log


#: Seconds an idle worker of the embedded stack may take to exit after SIGTERM: it took 5.5 s on the filesystem
#: broker before (2 s per poll of Celery's blocking loop, 1 s timer sleeps); about 1 s now (prefork, idle machine).
IDLE_EXIT_BOUND = 4.5
#: Celery's own prefork pool, which naps in billiard's helper threads and children before it exits (`-P custom`).
STOCK_PREFORK = {"CELERY_CUSTOM_WORKER_POOL": "support.stockpool:TaskPool"}


def idle_exit_seconds(tmp_path: Path, pool_name: str, *extra: str, env: dict[str, str] | None = None) -> float:
    """Start a worker of ``pool_name`` on the filesystem broker, SIGTERM it once it consumes; return seconds to exit."""
    env = {**stack_env(tmp_path / "run", free_port(), free_port()), "REMAP_SIGTERM": "SIGQUIT", **(env or {})}
    run([sys.executable, "manage.py", "migrate", "--noinput"], env)
    argv = [sys.executable, "-m", "celery", "-A", PACKAGE, "worker", "-Q", pool_name, "-l", "INFO", *extra]
    worker = Process(argv, tmp_path / "worker.log", env=env).start()
    try:
        path = heartbeat.heartbeat_path(pool_name, worker.pid, Path(env["RUN_DIR"]) / "heartbeat")
        wait_until(lambda: path.exists() or not worker.alive(), 120, "the worker to consume")
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        worker.stop()
    assert code == 0, worker.log()[-3000:]
    return took


@pytest.mark.workers
@pytest.mark.parametrize("pool_name", ["default", "emails"])
def test_an_idle_worker_on_the_filesystem_broker_exits_within_seconds(tmp_path, pool_name):
    took = idle_exit_seconds(tmp_path / "project", pool_name)
    print(f"\n{pool_name}: idle worker on the filesystem broker exited {took:.2f}s after SIGTERM")
    assert took < IDLE_EXIT_BOUND
    if pool_name == "default":
        # The same worker with Celery's own prefork pool, on the same machine at the same time: its children nap
        # 1 s after saying goodbye and its helper threads up to 0.8 s and 1 s more (worker/prefork.py).
        stock = idle_exit_seconds(tmp_path / "stock", pool_name, "-P", "custom", env=STOCK_PREFORK)
        # Printed, not asserted: the gap (1.0 s against 2.4-2.8 s when the machine is quiet) shrank to 0.36 s in a
        # CI run with three suites on two cores. A speed comparison belongs in a benchmark, not in a timed test.
        print(f"default with Celery's own prefork pool: {stock:.2f}s")
        assert stock < IDLE_EXIT_BOUND * 2, "Celery's own pool did not exit either: the comparison means nothing"
