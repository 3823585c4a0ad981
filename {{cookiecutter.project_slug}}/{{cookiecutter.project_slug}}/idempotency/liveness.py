"""Each worker proves it is alive in the database and runs the recovery pass, from a thread of its main process."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import timedelta
from typing import Any

from celery import bootsteps
from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from {{ cookiecutter.project_slug }}.core.celery_internals import held_task_ids
from {{ cookiecutter.project_slug }}.worker.threadpool import SHUTDOWN_SIGNALS

from . import maintenance
from .models import WorkerLiveness

__all__ = ["Liveness", "LivenessThread"]

logger = logging.getLogger(__name__)
FAILED_LOG = "liveness of %s not renewed (%r); other workers reclaim its rows if this lasts %.0fs"


#: Held by the liveness thread while it uses the database, and taken around every fork of this process: a pool
#: child forked mid-transaction would inherit that connection's state (SQLite's locks, a PostgreSQL socket) and
#: could hold the database's write lock for its own whole task (seen: another worker's write waited 20 s).
_FORK_GUARD = threading.Lock()
os.register_at_fork(before=_FORK_GUARD.acquire, after_in_parent=_FORK_GUARD.release, after_in_child=_FORK_GUARD.release)


class LivenessThread(threading.Thread):
    """Renew ``alive_until`` of one worker node every interval, then run a recovery pass.

    A thread, not a task or the consumer's timer: a busy pool, a lost broker connection or a slow
    database write block neither the renewal nor the recovery of the rows other workers lost.
    """

    def __init__(self, node: str) -> None:
        super().__init__(name=f"liveness-{node}", daemon=True)
        self.node = node
        self.stopping = threading.Event()
        self.started_at = timezone.now()
        self.interval = float(settings.IDEMPOTENCY_LIVENESS_INTERVAL)
        self.timeout = float(settings.IDEMPOTENCY_LIVENESS_TIMEOUT)

    def run(self) -> None:
        # Shutdown signals belong to the main thread: one delivered to this thread would run Celery's handler in the
        # main thread at any instant, even inside the threads pool's submit(), which blocks them there for that
        # reason (worker/threadpool.py); the handler then waited on submit's own lock and the worker hung.
        signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        healthy_since: float | None = None
        next_republish = 0.0
        try:
            while True:
                # No fork of a pool child while this thread holds a database connection (see _FORK_GUARD).
                with _FORK_GUARD:
                    try:
                        close_old_connections()
                        self.renew()
                        healthy_since = healthy_since or time.monotonic()
                        # Another node's rows only after this node wrote for a whole timeout: when the database
                        # comes back, every node renews before any is judged dead by a lapse the outage caused.
                        healthy = time.monotonic() - healthy_since >= self.timeout
                        republish = healthy and time.monotonic() >= next_republish
                        if republish:
                            next_republish = time.monotonic() + settings.IDEMPOTENCY_REPUBLISH_AFTER
                        maintenance.recover(
                            node=self.node, running=held_task_ids, other_nodes=healthy, republish=republish
                        )
                    except Exception as exc:  # the thread must outlive a database or broker outage
                        if healthy_since is not None:
                            logger.warning(FAILED_LOG, self.node, exc, self.timeout)
                        healthy_since = None
                    finally:
                        connections.close_all()
                if self.stopping.wait(self.interval):
                    return
        finally:
            connections.close_all()

    def renew(self) -> None:
        """Write "alive until now + timeout" for this node (and this incarnation of it)."""
        WorkerLiveness.objects.update_or_create(
            node=self.node,
            defaults={
                "pid": os.getpid(),
                "started_at": self.started_at,
                "alive_until": timezone.now() + timedelta(seconds=self.timeout),
            },
        )

    def stop(self) -> None:
        """Stop renewing and remove this node's record: its rows are finished or given back by now."""
        self.stopping.set()
        self.join(timeout=self.interval + 10)
        try:
            WorkerLiveness.objects.filter(node=self.node, pid=os.getpid()).delete()
        finally:
            connections.close_all()


class Liveness(bootsteps.StartStopStep):
    """Worker step that runs the :class:`LivenessThread` from start until the pool has stopped.

    Started right after the event loop, so it stops after the pool: a warm shutdown still waiting
    for a long task keeps proving the node alive, and no other worker robs that task.
    """

    requires = ("celery.worker.components:Hub",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: LivenessThread | None = None

    def start(self, parent: Any) -> None:
        if self.thread is None:
            self.thread = LivenessThread(parent.hostname)
            self.thread.start()

    def stop(self, parent: Any) -> None:
        if self.thread is not None:
            thread, self.thread = self.thread, None
            thread.stop()

    def terminate(self, parent: Any) -> None:
        self.stop(parent)
