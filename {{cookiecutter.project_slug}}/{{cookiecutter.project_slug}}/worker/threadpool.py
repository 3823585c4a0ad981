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

An interrupt is held back while the task publishes a message (``app.send_task``: ``apply_async``, ``retry``)
and raised as the publish returns (issue 16). Landing in py-amqp halfway through reading a frame, it left the
pooled connection out of step with its stream; kombu then closes a connection that failed, and the close waited
for the broker's reply, reading a frame length from the middle of a frame: for good, in C, where no further
interrupt lands, and the interpreter's exit joins task threads. Seen as a cold shutdown that never exited.

It also enforces the time limits, which Celery's threads pool ignores, counted from the task's start as
billiard counts them (a task waiting in the executor's queue for a thread does not spend them): one watchdog
thread raises :class:`~celery.exceptions.SoftTimeLimitExceeded` inside the task's thread at the soft limit, and at the
hard limit reports the task as timed out (as a prefork pool does when it kills the child) and raises
``WorkerTerminate`` inside the thread so the task stops without reporting again. A thread cannot be
killed: the exception lands at the task's next Python instruction, so a call blocked in C (a socket read
without a timeout) ends first, and a task that swallows ``BaseException`` runs on.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import partial
from typing import Any

from celery.concurrency.base import BasePool, apply_target
from celery.exceptions import SoftTimeLimitExceeded, WorkerTerminate

from {{ cookiecutter.project_slug }}.core.celery_internals import ApplyResult, ThreadTaskPool, cold_shutdown_started

logger = logging.getLogger(__name__)

__all__ = ["TaskPool", "interrupts_held"]

#: Signals whose handlers stop the worker; blocked while a task is handed to a thread.
SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGQUIT, signal.SIGINT}


class HardTimeLimitExceeded(WorkerTerminate):
    """Raised inside a task's thread at its hard time limit: the task stops, and is reported as timed out once."""


#: What this pool raises inside task threads; one that lands after its task ended is dropped (see ``_Job``).
_INTERRUPTS = (SoftTimeLimitExceeded, WorkerTerminate)


#: The job running in this thread, while it runs (see :func:`interrupts_held`).
_current = threading.local()


class _Job:
    """One task call, which knows the thread running it while it runs."""

    def __init__(self, target: Callable[..., Any]) -> None:
        self.target = target
        #: Called in the task's thread as the task starts: its time limits count from here, as prefork's do.
        self.on_start: Callable[[], None] | None = None
        self.lock = threading.Lock()
        self.thread_id: int | None = None
        #: How deep the task is in sections that an interrupt must not land in (:func:`interrupts_held`).
        self.held = 0
        #: The interrupt sent while held, raised as the outermost section ends.
        self.pending: type[BaseException] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.thread_id = threading.get_ident()
        _current.job = self
        try:
            if self.on_start is not None:
                with interrupts_held():  # a stop landing while the watchdog's lock is held would stop the watchdog
                    self.on_start()
            return self.target(*args, **kwargs)
        finally:
            _current.job = None
            self._disarm()

    def _disarm(self) -> None:
        """Stop interrupts to this thread and drop one sent as the task ended, which would hit the next task."""
        thread_id = threading.get_ident()
        while True:
            try:
                with self.lock:
                    self.thread_id = None
                    # interrupt() sends under this lock and only while thread_id is set: none can follow this.
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
                return
            except _INTERRUPTS:
                continue  # it landed here, between the task's end and the clearing: meant for the ended task

    def interrupt(self, exc_type: type[BaseException] = WorkerTerminate) -> bool:
        """Raise ``exc_type`` in the thread running the task; return whether it was running."""
        with self.lock:
            if self.thread_id is None:
                return False
            if self.held:
                # Raised by the thread itself as the held section ends; a stop outranks a soft limit.
                if self.pending is None or not issubclass(exc_type, SoftTimeLimitExceeded):
                    self.pending = exc_type
                return True
            done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread_id), ctypes.py_object(exc_type)
            )
        return done == 1


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold back this pool's interrupts of the running task until the block ends, then raise the one sent.

    For broker I/O that an exception must not cut in two (see the module docstring). Outside a task of this
    pool it does nothing. An interrupt that lands just as the block is entered is raised where it lands.
    """
    job: _Job | None = getattr(_current, "job", None)
    if job is None:
        yield
        return
    with job.lock:
        job.held += 1
    try:
        yield
    finally:
        with job.lock:
            job.held -= 1
            pending = job.pending if job.held == 0 else None
            if pending is not None:
                job.pending = None
        if pending is not None:
            raise pending


class _Watchdog:
    """One thread that fires the running tasks' time limits, soonest first."""

    def __init__(self) -> None:
        self._wakeup = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the watchdog thread ``delay`` seconds from now."""
        with self._wakeup:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), action))
            if self._thread is None:
                # Started from a task's thread, which submit() started with the shutdown signals blocked (see
                # on_apply): it inherits the mask, so the main thread alone receives these signals.
                self._thread = threading.Thread(target=self._run, name="time-limits", daemon=True)
                self._thread.start()
            self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wakeup.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, action = heapq.heappop(self._due)
            try:
                action()  # a job that already ended is not interrupted: its action does nothing
            except Exception:
                # This thread enforces every later limit: it must outlive a failing report.
                logger.exception("Enforcing a time limit failed")


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
        self._watchdog = _Watchdog()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        timeout_callback: Callable[[bool, float], None] | None = None,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        **_: Any,
    ) -> Any:
        """Hand the task to a thread; return its :class:`_Result` (the stubs' ``BasePool.on_apply`` returns None)."""
        # The task's own limits, else the worker's (-soft-time-limit/--time-limit, set from the pool). They are
        # armed when a thread starts the task: a task waiting in the executor's queue behind busy threads (up to
        # the prefetch) must not spend its time limits there, as billiard counts from the job's acceptance too.
        job = _Job(target)
        job.on_start = partial(
            self._enforce, job, soft_timeout or self.soft_timeout, timeout or self.timeout, timeout_callback
        )
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

    @property
    def soft_timeout(self) -> float | None:
        """Return the worker's soft time limit in seconds (``--soft-time-limit``), or None."""
        limit: float | None = self.options.get("soft_timeout")
        return limit

    @property
    def timeout(self) -> float | None:
        """Return the worker's hard time limit in seconds (``--time-limit``), or None."""
        limit: float | None = self.options.get("timeout")
        return limit

    def _enforce(
        self, job: _Job, soft: float | None, hard: float | None, report: Callable[[bool, float], None] | None
    ) -> None:
        """Schedule ``job``'s soft and hard time limits; ``report`` is the request's ``on_timeout``."""

        def soft_limit() -> None:
            if job.interrupt(SoftTimeLimitExceeded) and report is not None and soft is not None:
                report(True, soft)

        def hard_limit() -> None:
            # As when a prefork child is killed: the task stops, and on_timeout alone reports and acks it.
            if job.interrupt(HardTimeLimitExceeded) and report is not None and hard is not None:
                report(False, hard)

        if soft:
            self._watchdog.at(soft, soft_limit)
        if hard:
            self._watchdog.at(hard, hard_limit)

    def _get_info(self) -> dict[str, Any]:
        info = super()._get_info()
        info["timeouts"] = (self.soft_timeout or 0, self.timeout or 0)  # as the prefork pool reports them
        return info

    def on_stop(self) -> None:
        """Stop taking tasks; wait for running ones only in a warm shutdown (see the module docstring)."""
        self.executor.shutdown(wait=not cold_shutdown_started(), cancel_futures=True)
        BasePool.on_stop(self)

    def terminate_job(self, pid: int, signal: Any = None) -> None:
        """Do nothing: every thread shares the worker's pid; ``_Result.terminate`` stops the one job."""
