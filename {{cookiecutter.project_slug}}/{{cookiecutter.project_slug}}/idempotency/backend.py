"""Celery's result backend as idempotent tasks see it: written only for a caller that asked for an AsyncResult."""

from __future__ import annotations

from typing import Any

from celery import Task

from {{ cookiecutter.project_slug }}.core.celery_internals import ignores_result

__all__ = ["RequestedResultsBackend"]


class RequestedResultsBackend:
    """The app's result backend, whose writes are skipped for deliveries that ignore their result.

    The status row is the system of record. Celery still writes a RETRY state for every cancelled
    task (``Request._announce_cancelled``, whatever ``ignore_result`` says): with the backend
    unreachable (a Redis outage) that write raised and the message was acked as revoked. Here every
    state write asks the delivery's request first; reads go to the real backend unchanged.
    """

    def __init__(self, task: Task[Any, Any], backend: Any) -> None:
        self._task = task
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def _wanted(self, request: Any) -> bool:
        # No request: a write outside a delivery (update_state from code), which asked for it by name.
        return request is None or not ignores_result(self._task, request)

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, request: Any = None, **kw: Any) -> Any:
        """Store ``result`` only for a delivery whose caller asked for it."""
        if self._wanted(request):
            return self._backend.store_result(task_id, result, state, *args, request=request, **kw)
        return result

    def mark_as_retry(self, task_id: str, exc: Any, *args: Any, request: Any = None, **kw: Any) -> Any:
        """Store the RETRY state only for a delivery whose caller asked for its result."""
        if self._wanted(request):
            return self._backend.mark_as_retry(task_id, exc, *args, request=request, **kw)
        return None

    def mark_as_revoked(
        self, task_id: str, *args: Any, request: Any = None, store_result: bool = True, **kw: Any
    ) -> Any:
        """Revoke: chord bookkeeping as Celery does, the state stored only when asked for."""
        wanted = store_result and self._wanted(request)
        return self._backend.mark_as_revoked(task_id, *args, request=request, store_result=wanted, **kw)

    def mark_as_failure(
        self, task_id: str, exc: Any, *args: Any, request: Any = None, store_result: bool = True, **kw: Any
    ) -> Any:
        """Fail: errbacks and chords as Celery does, the state stored only when asked for."""
        wanted = store_result and self._wanted(request)
        return self._backend.mark_as_failure(task_id, exc, *args, request=request, store_result=wanted, **kw)

    def mark_as_done(
        self, task_id: str, result: Any, *args: Any, request: Any = None, store_result: bool = True, **kw: Any
    ) -> Any:
        """Succeed: chords as Celery does, the result stored only when asked for."""
        wanted = store_result and self._wanted(request)
        return self._backend.mark_as_done(task_id, result, *args, request=request, store_result=wanted, **kw)
