"""The delivery system check passes on the generated project and fails, naming the numbers, on each disagreement."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import run_checks

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker import checks, procfiles
from {{ cookiecutter.project_slug }}.worker.queues import broker_transport_options

from support.servers import PACKAGE, PROJECT_DIR

REDIS = "redis://127.0.0.1:6379/0"


def timing_ids(registry=pools.POOLS, **overrides) -> list[str | None]:
    """Return the ids of the errors ``timing_errors`` finds for the production numbers with ``overrides``."""
    registry = tuple(registry)
    options = broker_transport_options(REDIS, Path("/unused"), registry)
    arguments = {
        "broker_url": REDIS,
        "broker_options": options,
        "result_backend": REDIS,
        "backend_options": options,
        "soft_shutdown": pools.soft_shutdown_timeout(registry),
        "grace_periods": {"compose.yaml": {p.name: pools.stop_grace_period(p) for p in registry}},
        **overrides,
    }
    return [error.id for error in checks.timing_errors(registry, **arguments)]


def test_numbers_derived_from_the_registry_agree():
    assert timing_ids() == []
    test_pools = settings.WORKER_POOLS
    assert timing_ids(test_pools) == []
    for pool in pools.POOLS:
        assert pool.soft_time_limit < pool.time_limit < pool.lease_seconds < pools.visibility_timeout()
        assert pools.stop_grace_period(pool) > pool.soft_shutdown_timeout


def test_test_settings_shorten_every_number_the_same_way():
    registry = settings.WORKER_POOLS
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout")
    if settings.CELERY_BROKER_URL.startswith("redis"):
        assert visibility == pools.visibility_timeout(registry)
    assert pools.soft_shutdown_timeout(registry) == settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT
    # Seconds, not minutes: a SIGKILLed worker's task comes back while the test waits.
    unscaled = [p.name for p in registry if p in pools.POOLS]
    assert not unscaled, f"give {unscaled} shortened limits in WORKER_POOLS of {PACKAGE}/config/settings/test.py"
    assert pools.visibility_timeout(registry) <= 20
    assert pools.soft_shutdown_timeout(registry) < min(p.soft_time_limit for p in registry)
    for pool in registry:
        assert 1 <= pool.soft_shutdown_timeout < pool.soft_time_limit


def test_each_pool_has_its_own_soft_shutdown():
    short = pools.Pool(name="webhooks", purpose="short calls", pool="threads", soft_time_limit=10, time_limit=20)
    assert short.soft_shutdown_timeout == 5
    # A short pool no longer shortens the others' soft shutdown and grace period.
    assert pools.REPORTS.soft_shutdown_timeout == pools.SOFT_SHUTDOWN_TIMEOUT
    assert pools.stop_grace_period(pools.REPORTS) == pools.SOFT_SHUTDOWN_TIMEOUT + pools.GRACE_MARGIN
    assert pools.stop_grace_period(short) == 5 + pools.GRACE_MARGIN
    # The setting (a worker's default before it applies its pool's) is the shortest pool's.
    assert pools.soft_shutdown_timeout((*pools.POOLS, short)) == 5


def test_delivery_settings_are_on():
    assert settings.CELERY_TASK_ACKS_LATE is True
    assert settings.CELERY_TASK_REJECT_ON_WORKER_LOST is True
    assert settings.CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS is True
    assert [m for m in run_checks(tags=["delivery"]) if m.is_serious()] == []


def test_soft_limit_not_below_hard_limit_is_an_error():
    broken = dataclasses.replace(pools.DEFAULT)
    object.__setattr__(broken, "soft_time_limit", broken.time_limit)  # as a hand edit that skips validation
    assert timing_ids((broken, pools.REPORTS)) == ["delivery.E001"]


def test_lease_not_above_hard_limit_is_an_error():
    class NoMargin(pools.Pool):
        @property
        def lease_seconds(self) -> int:
            return self.time_limit

    broken = NoMargin(name="default", purpose="no lease margin", soft_time_limit=30, time_limit=60)
    assert timing_ids((broken, pools.REPORTS)) == ["delivery.E002"]


def test_visibility_timeout_below_a_lease_is_an_error():
    options = {"visibility_timeout": pools.REPORTS.lease_seconds}
    errors = checks.timing_errors(
        pools.POOLS,
        broker_url=REDIS,
        broker_options=options,
        result_backend=REDIS,
        backend_options=options,
        soft_shutdown=pools.soft_shutdown_timeout(),
        grace_periods={},
    )
    assert [e.id for e in errors] == ["delivery.E003"]
    assert f"({pools.REPORTS.lease_seconds}s)" in errors[0].msg
    assert "'reports'" in errors[0].msg


def test_rabbitmq_consumer_timeout_below_the_longest_lease_plus_margin_is_an_error():
    amqp: dict[str, Any] = {
        "broker_url": "amqp://guest:guest@127.0.0.1:5672//",
        "broker_options": {"confirm_publish": True},
    }
    needed = pools.consumer_timeout()
    assert needed > pools.REPORTS.lease_seconds > pools.RABBITMQ_DEFAULT_CONSUMER_TIMEOUT
    assert timing_ids(**amqp, consumer_timeout=needed) == []
    # RabbitMQ's own 30-minute default is below the reports pool's lease: the check says what to set.
    errors = checks.timing_errors(
        pools.POOLS,
        **amqp,
        result_backend=REDIS,
        backend_options={},
        soft_shutdown=pools.soft_shutdown_timeout(),
        grace_periods={},
        consumer_timeout=pools.RABBITMQ_DEFAULT_CONSUMER_TIMEOUT,
    )
    assert [e.id for e in errors] == ["delivery.E008"]
    assert "the 'reports' pool's lease (2160s)" in errors[0].msg
    assert f"consumer_timeout = {needed * 1000}" in (errors[0].hint or "")
    assert timing_ids(consumer_timeout=1) == []  # a Redis broker has no consumer timeout to compare


def test_result_backend_visibility_must_equal_the_brokers():
    options = broker_transport_options(REDIS, Path("/unused"))
    other = {**options, "visibility_timeout": options["visibility_timeout"] + 1}
    assert timing_ids(backend_options=other) == ["delivery.E004"]
    # A result backend that is not Redis has no visibility timeout to compare.
    assert timing_ids(result_backend="file:///tmp/results", backend_options={}) == []


def test_soft_shutdown_off_is_an_error():
    assert timing_ids(soft_shutdown=0) == ["delivery.E005"]


def test_grace_period_not_above_soft_shutdown_is_an_error():
    soft = pools.IMAGES.soft_shutdown_timeout
    ids = timing_ids(grace_periods={"k8s/worker-images.yaml": {"images": soft}})
    assert ids == ["delivery.E006"]


def test_grace_period_is_compared_with_its_own_pools_soft_shutdown():
    # Above the shortest soft shutdown (the setting), not above the reports pool's own.
    reports = pools.REPORTS.soft_shutdown_timeout
    assert pools.soft_shutdown_timeout() < reports
    errors = checks.timing_errors(
        pools.POOLS,
        broker_url=REDIS,
        broker_options={},
        result_backend="",
        backend_options={},
        soft_shutdown=pools.soft_shutdown_timeout(),
        grace_periods={"compose.yaml": {"reports": reports, "default": pools.stop_grace_period(pools.DEFAULT)}},
    )
    assert [e.id for e in errors] == ["delivery.E006"]
    assert f"'reports' worker ({reports}s) must be above its pool's soft shutdown timeout ({reports}s)" in errors[0].msg


def test_grace_periods_are_read_from_compose_and_kubernetes_files(tmp_path):
    for name, text in procfiles.render_all(pools.POOLS, kubernetes=True).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = checks.grace_periods_on_disk(tmp_path, pools.POOLS)
    expected = {p.name: float(pools.stop_grace_period(p)) for p in pools.POOLS}
    assert found["compose.yaml"] == expected
    for pool in pools.POOLS:
        assert found[f"k8s/worker-{pool.name}.yaml"] == {pool.name: expected[pool.name]}


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1m30s", 90), (45, 45), ("1h", 3600), ("2.5s", 2.5)])
def test_compose_durations(text, seconds):
    assert checks._seconds(text) == seconds


def run_check(tmp_path: Path, settings_body: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py check`` with a settings module that imports the test settings and changes them."""
    (tmp_path / "edited_settings.py").write_text(
        f"from {PACKAGE}.config.settings.test import *  # noqa\n{settings_body}\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
        "DJANGO_SETTINGS_MODULE": "edited_settings",
        "PYTHONPATH": str(tmp_path),
        "CELERY_BROKER_URL": REDIS,
        "RUN_DIR": str(tmp_path / "run"),
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_manage_py_check_passes_on_the_generated_project(tmp_path):
    done = run_check(tmp_path, "")
    assert done.returncode == 0, done.stderr
    assert "delivery." not in done.stdout + done.stderr


def test_manage_py_check_fails_on_a_hand_edited_visibility_timeout(tmp_path):
    done = run_check(tmp_path, 'CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 5}')
    assert done.returncode != 0
    assert "delivery.E003" in done.stderr
    assert "visibility timeout (5s) must be above the lease" in done.stderr
    assert "delivery.E004" in done.stderr  # the result backend still has the derived value


def test_manage_py_check_fails_on_a_hand_edited_grace_period(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    compose = (PROJECT_DIR / "compose.yaml").read_text()
    grace = pools.stop_grace_period(pools.DEFAULT)  # the first worker service
    assert f"stop_grace_period: {grace}s" in compose
    (project / "compose.yaml").write_text(compose.replace(f"stop_grace_period: {grace}s", "stop_grace_period: 1s", 1))
    done = run_check(tmp_path, f"BASE_DIR = __import__('pathlib').Path({str(project)!r})")
    assert done.returncode != 0
    assert "delivery.E006" in done.stderr
    assert "compose.yaml: the grace period of the 'default' worker (1.0s)" in done.stderr


#: The README's "Adding a pool" snippet without its ``pools`` import, as a new user wrote it.
BROKEN_TASKS = """
from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task


@shared_task(worker_pool=pools.DEFAULT)
def ping() -> str:
    return "pong"
"""


def test_every_task_module_of_the_project_imports():
    modules = checks.task_modules()
    assert (f"{PACKAGE}.worker.tasks", True) in modules
    assert ("tests.tasks.pools", False) in modules  # CELERY_IMPORTS of the test settings
    assert checks.task_module_errors(modules) == []


def test_a_task_module_that_does_not_import_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "broken_tasks.py").write_text(BROKEN_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    errors = checks.task_module_errors(
        [
            ("broken_tasks", False),
            ("no_such_tasks", False),
            ("django.contrib.auth.tasks", True),  # an installed app without tasks
            (f"{PACKAGE}.worker.tasks", True),
        ]
    )
    assert [(e.id, e.obj) for e in errors] == [("tasks.E001", "broken_tasks"), ("tasks.E001", "no_such_tasks")]
    assert "The task module 'broken_tasks' does not import: NameError: name 'pools' is not defined" in errors[0].msg
    assert "ModuleNotFoundError: No module named 'no_such_tasks'" in errors[1].msg


def test_manage_py_check_fails_on_a_task_module_that_does_not_import(tmp_path):
    # An installed app whose tasks module raises, as Celery's autodiscovery finds it.
    app = tmp_path / "brokenapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "tasks.py").write_text(BROKEN_TASKS)
    done = run_check(tmp_path, 'INSTALLED_APPS = [*INSTALLED_APPS, "brokenapp"]')
    assert done.returncode != 0
    assert "tasks.E001" in done.stderr
    assert "The task module 'brokenapp.tasks' does not import: NameError: name 'pools' is not defined" in done.stderr


def test_kombu_restore_lock_expires_after_a_few_restore_passes_not_five_minutes(redis_url):
    # A worker SIGKILLed while restoring overdue messages leaves kombu's lock behind: nobody restores until it expires.

    from kombu import Connection

    registry = pools.scaled(pools.POOLS, {"reports": (1500, 1800)})
    options = broker_transport_options(REDIS, Path("/unused"), registry)
    expire = options["unacked_mutex_expire"]
    assert expire == pools.unacked_mutex_expire(registry) == 3 * pools.restore_interval(registry)
    assert options["unacked_mutex_expire"] < 300  # kombu's default
    # kombu's Redis channel reads the option under this name (a misspelt key would be ignored silently).
    with Connection(redis_url, transport_options=options) as connection:
        channel: Any = connection.default_channel
        assert channel.unacked_mutex_expire == options["unacked_mutex_expire"]
        assert channel.unacked_restore_interval == pools.restore_interval(registry)
