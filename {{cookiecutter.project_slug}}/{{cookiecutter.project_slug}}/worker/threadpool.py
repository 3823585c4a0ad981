"""The threads pool, with running tasks that a cold (soft) shutdown can stop as it stops prefork children.

Celery 5.7's threads pool cannot cancel a running task: at the end of the soft shutdown the worker fails
with ``NotImplementedError`` ("does not implement kill_job"), exits 1 and waits for the task without limit,
until the orchestrator's SIGKILL leaves the message to the visibility timeout. This pool raises
:class:`~celery.exceptions.WorkerTerminate` (a ``SystemExit``) inside the task's thread instead, at its
next Python instruction, so the task unwinds (``finally`` blocks run), is not acknowledged, and the
closing connection puts its message back in the queue.

The cold shutdown stops the pool from the signal handler, on the main thread, which may be holding a
lock at that moment; two such hangs (until SIGKILL) are fixed here. Shutdown signals are held back while
a task is handed to a thread, as ``ThreadPoolExecutor.submit`` holds the lock that ``shutdown()`` takes;
and a cold shutdown does not join the task threads, which may wait for a lock the interrupted main
thread holds (a logging handler's, for one): the cancelled tasks end by themselves and the interpreter
joins their threads at exit.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from celery.concurrency.base import BasePool, apply_target
from celery.exceptions import WorkerTerminate

from {{ cookiecutter.project_slug }}.core.celery_internals import ApplyResult, ThreadTaskPool, cold_shutdown_started

__all__ = ["TaskPool"]

#: Signals whose handlers stop the worker; blocked while a task is handed to a thread.
SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGQUIT, signal.SIGINT}


class _Job:
    """One task call, which knows the thread running it while it runs."""

    def __init__(self, target: Callable[..., Any]) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.thread_id: int | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.thread_id = threading.get_ident()
        try:
            return self.target(*args, **kwargs)
        finally:
            with self.lock:
                self.thread_id = None

    def interrupt(self) -> bool:
        """Raise ``WorkerTerminate`` in the thread running the task; return whether it was running."""
        with self.lock:
            if self.thread_id is None:
                return False
            done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread_id), ctypes.py_object(WorkerTerminate)
            )
        return done == 1


class _Result(ApplyResult):
    """The pending result of a task, which ``Request.cancel`` can terminate."""

    def __init__(self, future: Future[Any], job: _Job) -> None:
        super().__init__(future)
        self.job = job

    def terminate(self, signal: Any = None) -> None:
        """Stop the running task (the signal is meaningless to a thread)."""
        self.job.interrupt()


class TaskPool(ThreadTaskPool):
    """Celery's threads pool whose jobs can be terminated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The worker keeps only a weak reference to a job's result: hold it while the job runs.
        self._running: set[_Result] = set()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **_: Any,
    ) -> Any:
        """Hand the task to a thread; return its :class:`_Result` (the stubs' ``BasePool.on_apply`` returns None)."""
        job = _Job(target)
        # Delivered when the mask is restored, after submit() released its lock (see the module docstring).
        # A thread submit() starts inherits the mask, so the main thread alone receives these signals.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        try:
            if cold_shutdown_started():
                # A message still delivered after the cold shutdown began: never run it, never acknowledge
                # it, and the closing connection puts it back in the queue.
                return _Result(Future(), job)
            future = self.executor.submit(apply_target, job, args, kwargs, callback, accept_callback)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        result = _Result(future, job)
        self._running.add(result)
        future.add_done_callback(lambda _: self._running.discard(result))
        return result

    def on_stop(self) -> None:
        """Stop taking tasks; wait for running ones only in a warm shutdown (see the module docstring)."""
        self.executor.shutdown(wait=not cold_shutdown_started(), cancel_futures=True)
        BasePool.on_stop(self)

    def terminate_job(self, pid: int, signal: Any = None) -> None:
        """Do nothing: every thread shares the worker's pid; ``_Result.terminate`` stops the one job."""
