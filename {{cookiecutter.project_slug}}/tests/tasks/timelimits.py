"""Test-only tasks on the emails (threads) pool that overrun their time limits and leave markers."""

from __future__ import annotations

import time

from celery.exceptions import SoftTimeLimitExceeded

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.core.celery_internals import shared_task

from tests.tasks.shutdown import bump


def work(seconds: float) -> None:
    """Work ``seconds`` in short sleeps (a raised exception lands between them)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


@shared_task(worker_pool=pools.EMAILS)
def overrun(key: str, seconds: float, ignore_soft: bool = False) -> str:
    """Work ``seconds``; at the soft limit clean up and return, or with ``ignore_soft`` work on regardless."""
    bump(f"started:{key}")
    try:
        work(seconds)
    except SoftTimeLimitExceeded:
        bump(f"soft:{key}")
        if not ignore_soft:
            return "cleaned up"
        work(seconds)  # past the hard limit: the pool stops it here
    bump(f"finished:{key}")
    return "finished"
