"""Each task reaches its own pool's worker, and only that one; unknown queues fail at enqueue."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.pools import UnknownQueueError
from {{ cookiecutter.project_slug }}.worker.app import SeveralPoolsError, pool_worker_options
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force

from support.servers import PACKAGE
from tests.tasks import pools as tasks


@pytest.mark.workers
def test_each_pool_consumes_only_its_own_queue(start_worker, clean_broker):
    images = start_worker("images")
    emails = start_worker("emails")

    swatches = [tasks.on_images.delay(32 + i, 16) for i in range(4)]
    greetings = [tasks.on_emails.delay(f"user{i}@example.com") for i in range(4)]
    stray = tasks.on_default.delay(1, 2)  # no default worker runs: this one must stay queued

    swatch_results = [r.get(timeout=60) for r in swatches]
    greeting_results = [r.get(timeout=60) for r in greetings]

    images_pids = {r["pid"] for r in swatch_results}
    emails_pids = {r["pid"] for r in greeting_results}
    assert all(r["sent"] == 1 for r in greeting_results)
    # The threads pool runs tasks in the worker's own process; prefork in children of it.
    assert emails_pids == {emails.pid}
    assert images.pid not in images_pids
    assert not images_pids & emails_pids
    images_log, emails_log = images.log(), emails.log()
    for result in swatches:
        assert f"on_images[{result.id}] received" in images_log
        assert result.id not in emails_log
    for result in greetings:
        assert f"on_emails[{result.id}] received" in emails_log
        assert result.id not in images_log

    assert stray.state == "PENDING"
    assert redis.Redis.from_url(clean_broker).llen("default") == 1


@pytest.mark.workers
def test_worker_takes_pool_options_from_registry(start_worker):
    from {{ cookiecutter.project_slug }} import pools

    start_worker("emails")
    start_worker("reports")
    stats = celery_app.control.inspect(timeout=5).stats() or {}
    queues = celery_app.control.inspect(timeout=5).active_queues() or {}
    by_prefix = {name.split("@")[0].rsplit("-", 1)[0]: (name, s) for name, s in stats.items()}

    emails_node, emails_stats = by_prefix["emails"]
    # The project's threads pool (threadpool.py: Celery's, with tasks the soft shutdown can stop).
    assert emails_stats["pool"]["implementation"].endswith(".threadpool:TaskPool")
    assert emails_stats["pool"]["max-concurrency"] == pools.EMAILS.concurrency
    assert [q["name"] for q in queues[emails_node]] == ["emails"]

    reports_node, reports_stats = by_prefix["reports"]
    reports_pool = pools.by_queue("reports", pools_in_force())
    assert reports_stats["pool"]["implementation"].endswith("prefork:TaskPool")
    assert reports_stats["pool"]["max-concurrency"] == reports_pool.concurrency
    assert reports_stats["pool"]["timeouts"] == [reports_pool.soft_time_limit, reports_pool.time_limit]
    assert reports_pool.concurrency is not None
    assert reports_stats["prefetch_count"] == reports_pool.prefetch_multiplier * reports_pool.concurrency
    assert [q["name"] for q in queues[reports_node]] == ["reports"]


def test_unknown_queue_fails_at_enqueue_naming_known_queues(broker):
    with pytest.raises(UnknownQueueError) as excinfo:
        tasks.on_default.apply_async((1, 2), queue="imagez")
    message = str(excinfo.value)
    assert "'imagez'" in message
    for name in ("default", "images", "emails", "reports"):
        assert name in message
    assert isinstance(excinfo.value, LookupError)
    with pytest.raises(UnknownQueueError, match="'nope'"):
        celery_app.send_task("anything", queue="nope")


def test_send_task_by_name_routes_to_declared_queue():
    router = celery_app.amqp.router
    route = router.route({}, tasks.on_images.name, (1, 1), {}, None)
    assert route["queue"].name == "images"
    route = router.route({}, tasks.on_reports.name, (10,), {}, None)
    assert route["queue"].name == "reports"


def test_every_project_task_declares_a_registry_queue():
    from {{ cookiecutter.project_slug }} import pools

    celery_app.loader.import_default_modules()
    project_tasks = [t for name, t in celery_app.tasks.items() if name.startswith("{{ cookiecutter.project_slug }}.")]
    assert project_tasks
    for task in project_tasks:
        # A task option, set as a class attribute by the task decorator: Celery's Task does not declare it.
        pool = getattr(task, "worker_pool", None)
        assert isinstance(pool, pools.Pool), task.name
        assert pool.queue in pools.queue_names(pools_in_force()), task.name


def test_worker_refuses_unknown_queue(worker_env, tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "{{ cookiecutter.project_slug }}", "worker", "-Q", "imagez"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "'imagez' is not in the worker-pool registry" in done.stderr + done.stdout


def run_worker(worker_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``celery -A <project> worker`` with ``args`` until it exits (a refused worker exits at once)."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", PACKAGE, "worker", *args, "--without-mingle", "--without-gossip"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_worker_refuses_several_pools(worker_env):
    done = run_worker(worker_env, "-Q", "images,emails")
    assert done.returncode != 0
    output = done.stderr + done.stdout
    assert "One worker cannot consume the queues 'images', 'emails'" in output, output[-3000:]
    assert (
        f"Start one worker per pool: celery -A {PACKAGE} worker -Q images; celery -A {PACKAGE} worker -Q emails"
        in output
    )
    assert "ready." not in output  # it never started consuming


def test_worker_without_queues_refuses_every_pool_at_once(worker_env):
    done = run_worker(worker_env)
    assert done.returncode != 0
    output = done.stderr + done.stdout
    assert "One worker cannot consume the queues 'default', 'images', 'emails', 'reports'" in output, output[-3000:]


def test_worker_options_come_from_its_one_pool():
    hostname, options = pool_worker_options(celery_app.conf, None, {"queues": ["images"]})
    images = pools.by_queue("images", pools_in_force())
    assert hostname == "images@%h"
    assert options["pool"] == "prefork"
    assert options["max_memory_per_child"] == images.max_memory_per_child == pools.IMAGES.max_memory_per_child
    assert options["soft_time_limit"] == images.soft_time_limit
    # An option given on the command line wins over the registry.
    _, options = pool_worker_options(celery_app.conf, None, {"queues": "images", "max_memory_per_child": 2048})
    assert options["max_memory_per_child"] == 2048
    _, options = pool_worker_options(celery_app.conf, None, {"queues": "emails"})
    assert options["max_memory_per_child"] is None
    with pytest.raises(SeveralPoolsError, match="'emails', 'reports'"):
        pool_worker_options(celery_app.conf, None, {"queues": "emails,reports"})
