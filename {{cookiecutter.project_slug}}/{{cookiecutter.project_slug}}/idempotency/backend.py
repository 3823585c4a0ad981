"""Celery's result backend as idempotent tasks see it: written only for a caller that asked for an AsyncResult."""

from __future__ import annotations

from typing import Any

from celery import Task, states

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

    # The signatures are Celery's (celery.backends.base.Backend), which calls some of them positionally.
    def store_result(
        self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None, **kwargs: Any
    ) -> Any:
        """Store ``result`` only for a delivery whose caller asked for it."""
        if self._wanted(request):
            return self._backend.store_result(task_id, result, state, traceback, request=request, **kwargs)
        return result

    def mark_as_retry(
        self,
        task_id: str,
        exc: Any,
        traceback: Any = None,
        request: Any = None,
        store_result: bool = True,
        state: str = states.RETRY,
    ) -> Any:
        """Store the RETRY state only for a delivery whose caller asked for its result."""
        if store_result and self._wanted(request):
            return self._backend.mark_as_retry(task_id, exc, traceback, request=request, state=state)
        return None

    def mark_as_revoked(
        self,
        task_id: str,
        reason: str = "",
        request: Any = None,
        store_result: bool = True,
        state: str = states.REVOKED,
    ) -> Any:
        """Revoke: chord bookkeeping as Celery does, the state stored only when asked for."""
        wanted = store_result and self._wanted(request)
        return self._backend.mark_as_revoked(task_id, reason, request=request, store_result=wanted, state=state)

    def mark_as_failure(
        self,
        task_id: str,
        exc: Any,
        traceback: Any = None,
        request: Any = None,
        store_result: bool = True,
        call_errbacks: bool = True,
        state: str = states.FAILURE,
    ) -> Any:
        """Fail: errbacks and chords as Celery does, the state stored only when asked for."""
        wanted = store_result and self._wanted(request)
        return self._backend.mark_as_failure(
            task_id, exc, traceback, request=request, store_result=wanted, call_errbacks=call_errbacks, state=state
        )

    def mark_as_done(
        self, task_id: str, result: Any, request: Any = None, store_result: bool = True, state: str = states.SUCCESS
    ) -> Any:
        """Succeed: chords as Celery does, the result stored only when asked for."""
        wanted = store_result and self._wanted(request)
        return self._backend.mark_as_done(task_id, result, request=request, store_result=wanted, state=state)
