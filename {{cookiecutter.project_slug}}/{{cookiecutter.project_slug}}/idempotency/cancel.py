"""Cancel a task call: its row ends ``cancelled``, a running delivery is stopped, a late message does nothing."""

from __future__ import annotations

import logging
import threading
from functools import partial

from django.db import transaction
from django.utils import timezone

from {{ cookiecutter.project_slug }}.claimcheck.base import delete_arguments_blob

from .exceptions import TaskAlreadyFinishedError, TaskRecordNotFoundError
from .models import FINISHED, Status, TaskRecord
from .selectors import TaskResult

__all__ = ["cancel"]

logger = logging.getLogger(__name__)


def cancel(key: str) -> TaskResult:
    """Cancel the call of ``key`` and return its row; raise if there is none or it is final already.

    One conditional UPDATE decides: a pending row never runs (every claim refuses a cancelled row),
    and a running one loses its owner fence, so its next progress report stops it and its outcome is
    discarded. Once that commits, the running delivery is also terminated by its pool (a revoke with
    terminate: a prefork child is killed, the project's threads pool raises ``WorkerTerminate`` in
    the task's thread), for bodies that report no progress. Its argument blob goes as at any final state.
    """
    for _ in range(3):  # each pass decides, unless a claim or an outcome changed the row in between
        record = TaskRecord.objects.filter(key=key).first()
        if record is None:
            raise TaskRecordNotFoundError(f"No task status row has key {key!r}.")
        if record.status in FINISHED:
            raise TaskAlreadyFinishedError(key, record.status)
        with transaction.atomic():
            if not TaskRecord.objects.filter(pk=record.pk, status=record.status, owner=record.owner).update(
                status=Status.CANCELLED, lease_expires_at=None, finished_at=timezone.now()
            ):
                continue
            delete_arguments_blob(record.args, record.kwargs)
            if record.status == Status.RUNNING and record.task_id:
                transaction.on_commit(partial(_terminate_soon, record.task_id, key))
        record.refresh_from_db()
        return TaskResult.from_record(record)
    raise RuntimeError(f"Task {key!r} changed state during each of 3 attempts to cancel it; try again.")


def _terminate_soon(task_id: str, key: str) -> None:
    # kombu retries a broadcast until the broker answers: a broker that is down must not hold the caller.
    threading.Thread(target=_terminate, args=(task_id, key), name=f"cancel-{task_id}", daemon=True).start()


def _terminate(task_id: str, key: str) -> None:
    from celery import current_app

    try:
        # SIGKILL: a prefork child inherits the worker's SIGTERM handler (REMAP_SIGTERM) and would run on. The
        # row is final already, so the killed body leaves nothing owed; the threads pool ignores the signal.
        current_app.control.revoke(task_id, terminate=True, signal="SIGKILL")
    except Exception:
        # The row is cancelled already: the delivery stops at its next progress report, or runs to an outcome
        # nobody records.
        logger.warning("Could not ask the workers to stop task %s (key %r)", task_id, key, exc_info=True)
