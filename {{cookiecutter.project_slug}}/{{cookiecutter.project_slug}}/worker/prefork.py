"""The prefork pool of a worker without an event loop (the filesystem broker), stopped without billiard's naps."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from billiard import pool as billiard_pool
from billiard.common import TERM_SIGNAL
from celery.concurrency import prefork

__all__ = ["TaskPool"]

# celery-types' billiard stubs leave out the pool internals extended here: they are typed as Any.
_billiard: Any = billiard_pool
DEATH, EX_FAILURE, EX_OK, RUN = _billiard.DEATH, _billiard.EX_FAILURE, _billiard.EX_OK, _billiard.RUN

# Without an event loop (make dev's filesystem broker) billiard runs its pool with helper threads that nap between
# passes, and each child naps 1 s after it said goodbye: an idle worker took 2.2-2.6 s to exit after SIGTERM, most
# of it in those naps. With an event loop (Redis, RabbitMQ) Celery uses its own pool class and none of this runs.


class _Worker(_billiard.Worker):
    """A pool child that leaves at once when its pool stops it, instead of napping 1 s for a signal from the parent."""

    leaving = False
    wait_for_job: Any

    def _make_child_methods(self, *args: Any, **kwargs: Any) -> None:
        super()._make_child_methods(*args, **kwargs)
        receive = self.wait_for_job

        def wait_for_job() -> Any:
            try:
                return receive()
            except SystemExit:  # the pool's sentinel, or its pipe closed: the pool is stopping
                self.leaving = True
                raise

        self.wait_for_job = wait_for_job

    def _do_exit(self, pid: int, exitcode: int | None, exc: BaseException | None = None) -> None:
        if not self.leaving:
            # Recycled or failed while the pool runs: the parent's result handler signals it after reading its
            # death notice, so the parent learns why it left before it sees it gone.
            super()._do_exit(pid, exitcode, exc)
            return
        # A stopping pool's result handler may be gone already: that signal never comes, and the nap is only a delay.
        code = exitcode if exitcode is not None else (EX_FAILURE if exc else EX_OK)
        try:
            if self.on_exit is not None:
                self.on_exit(pid, code)
            signal.pthread_sigmask(signal.SIG_BLOCK, {TERM_SIGNAL})  # a signal mid-put would leave the queue locked
            self.outq.put((DEATH, (pid, code)))
        finally:
            os._exit(code)


class _Supervisor(_billiard.Supervisor):
    """Billiard's supervisor, whose stop waits for a pass in progress, not for the 0.8 s nap after it."""

    def stop(self, timeout: float | None = None) -> None:
        if not self._was_started:
            super().stop(timeout)
            return
        # Once a pass in progress ends, _Pool refuses the next ones: no child is started after the pool closed, and
        # the daemon thread may nap on until the process exits.
        with self.pool.maintaining:
            pass


class _TimeoutHandler(_billiard.TimeoutHandler):
    """Billiard's time-limit thread, whose stop after ``terminate()`` does not wait out its 1 s nap."""

    def stop(self, timeout: float | None = None) -> None:
        # Terminated, it enforces no more limits: the pool's own termination ends every child that is left.
        if self._state == RUN:
            super().stop(timeout)


class _Pool(_billiard.Pool):
    Worker = _Worker
    Supervisor = _Supervisor
    TimeoutHandler = _TimeoutHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.maintaining = threading.Lock()
        super().__init__(*args, **kwargs)

    def _maintain_pool(self) -> None:
        with self.maintaining:
            if self._state == RUN:  # closed or terminated since the supervisor looked: start nothing
                super()._maintain_pool()


class TaskPool(prefork.TaskPool):
    """Celery's prefork pool; without an event loop its blocking pool is :class:`_Pool`."""

    BlockingPool = _Pool
