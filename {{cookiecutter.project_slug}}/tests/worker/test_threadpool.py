"""The project's threads pool enforces the pool's time limits on a real worker, as prefork does."""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any

import pytest
import redis
from celery import states
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.threadpool import _Job

from support.servers import wait_until
from tests.tasks.pools import on_emails
from tests.tasks.shutdown import count
from tests.tasks.timelimits import overrun

EMAILS = pools.by_queue("emails", settings.WORKER_POOLS)


@pytest.mark.workers
def test_threads_pool_reports_its_time_limits(start_worker):
    start_worker("emails")
    stats = celery_app.control.inspect(timeout=5).stats() or {}
    (emails,) = stats.values()
    assert emails["pool"]["implementation"].endswith(".threadpool:TaskPool")
    assert emails["pool"]["timeouts"] == [EMAILS.soft_time_limit, EMAILS.time_limit]


@pytest.mark.workers
def test_soft_time_limit_raises_inside_a_threads_task(start_worker):
    worker = start_worker("emails")
    started = time.monotonic()
    result = overrun.delay("soft", EMAILS.time_limit * 2)
    assert result.get(timeout=30) == "cleaned up"
    took = time.monotonic() - started
    assert EMAILS.soft_time_limit <= took < EMAILS.time_limit
    assert count("soft:soft") == 1
    assert count("finished:soft") == 0
    assert f"Soft time limit ({EMAILS.soft_time_limit}s) exceeded" in worker.log()


@pytest.mark.workers
def test_hard_time_limit_stops_a_threads_task_and_the_pool_goes_on(start_worker, clean_broker):
    worker = start_worker("emails")
    started = time.monotonic()
    result = overrun.delay("hard", EMAILS.time_limit * 2, ignore_soft=True)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    took = time.monotonic() - started
    assert EMAILS.time_limit <= took < EMAILS.time_limit + 3
    assert result.state == states.FAILURE
    assert f"Hard time limit ({EMAILS.time_limit}s) exceeded" in worker.log()
    assert count("soft:hard") == 1
    # Acknowledged once, as a prefork pool acks a task it killed (acks_on_timeout): not redelivered.
    wait_until(lambda: redis.Redis.from_url(clean_broker).hlen("unacked") == 0, 10, "the message to be acked")
    # Every thread still works: more tasks than threads run on the same worker.
    assert EMAILS.concurrency is not None
    greetings = [on_emails.delay(f"user{i}@example.com") for i in range(EMAILS.concurrency + 2)]
    assert all(r.get(timeout=30)["sent"] == 1 for r in greetings)
    time.sleep(EMAILS.time_limit * 2 - took + 1)  # the task would have finished by now had it not been stopped
    assert count("finished:hard") == 0
    assert worker.alive()


class LateLock:
    """A job's lock whose first acquisition comes with a soft limit landing in this thread, as the task ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acquired = 0

    def __enter__(self) -> None:
        self.lock.acquire()
        self.acquired += 1
        if self.acquired == 2:  # the first is the job's start; the second its end, after the task returned
            try:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(threading.get_ident()), ctypes.py_object(SoftTimeLimitExceeded)
                )
            except SoftTimeLimitExceeded:
                self.lock.release()  # it lands here, in __enter__, so the with statement will not release
                raise

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


def test_a_time_limit_landing_as_its_task_ends_is_dropped():
    job = _Job(lambda: "done")
    late = LateLock()
    vars(job)["lock"] = late
    # Without the drop it escapes the job: the worker never hears of the task, and a thread of the pool dies.
    assert job() == "done"
    assert late.acquired >= 3
    assert job.thread_id is None
    assert not job.interrupt(SoftTimeLimitExceeded)  # an ended job is never interrupted


@pytest.mark.workers
def test_a_threads_task_waiting_for_a_thread_keeps_its_whole_time_limit(start_worker):
    """The time limits count from the task's start, not its delivery, as prefork's do.

    One thread, three tasks of 0.6 soft limits each: the third waits 1.2 soft limits for the thread. Counted from
    delivery, the second was stopped at its soft limit and the third at its hard limit (in CI: idempotent e-mails
    retried after a countdown that outlived their test).
    """
    start_worker("emails", "--concurrency", "1")
    keys = [f"queued-{number}" for number in range(3)]
    results = [overrun.delay(key, EMAILS.soft_time_limit * 0.6) for key in keys]
    assert [result.get(timeout=30) for result in results] == ["finished"] * 3
    assert [count(f"soft:{key}") for key in keys] == [0, 0, 0]
