"""The worker-pool registry: the one place that names queues and how they are worked."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DEFAULT",
    "EMAILS",
    "IMAGES",
    "POOLS",
    "REPORTS",
    "Pool",
    "UnknownQueueError",
    "by_queue",
    "queue_names",
    "scaled",
]

PoolType = Literal["prefork", "threads"]

#: A claimed status row stays leased this fraction of the pool's hard time limit beyond it, so the pool
#: has killed and reported an overrunning task before another delivery may reclaim the row.
LEASE_MARGIN = 0.2
#: The broker keeps an unacknowledged message this fraction of the longest lease beyond it before it
#: redelivers the message (Redis ``visibility_timeout``): a task is never redelivered while leased.
VISIBILITY_MARGIN = 0.1
#: The smallest margin, in seconds, whatever the fractions give (the test settings' limits are seconds).
MIN_MARGIN = 2
#: A worker told to stop (SIGTERM, remapped to SIGQUIT) lets running tasks go on for at most this many
#: seconds before it cancels and requeues them (``worker_soft_shutdown_timeout``; see
#: :func:`soft_shutdown_timeout`).
SOFT_SHUTDOWN_TIMEOUT = 20
#: Seconds between the end of the soft shutdown and the orchestrator's SIGKILL: the cold shutdown cancels
#: the remaining tasks, requeues their messages and closes the broker connection in this time.
GRACE_MARGIN = 10


def margin(seconds: int, fraction: float) -> int:
    """Return ``fraction`` of ``seconds``, rounded up, and at least :data:`MIN_MARGIN`."""
    return max(MIN_MARGIN, math.ceil(seconds * fraction))


class UnknownQueueError(LookupError):
    """A queue name that is not in the worker-pool registry."""

    def __init__(self, queue: str, known: Iterable[str]) -> None:
        self.queue = queue
        self.known = tuple(known)
        super().__init__(
            f"Queue {queue!r} is not in the worker-pool registry ({__name__}); known queues: {', '.join(self.known)}."
        )


@dataclass(frozen=True, slots=True)
class Pool:
    """One specialised worker pool and the queue it alone consumes."""

    #: Pool name; also the queue name and the worker's node name prefix.
    name: str
    #: What the pool is for, shown in the README and process files.
    purpose: str
    #: ``prefork`` for CPU-bound or time-limited work, ``threads`` for I/O-bound.
    pool: PoolType = "prefork"
    #: Worker processes or threads; ``None`` means one per CPU core.
    concurrency: int | None = None
    #: Messages reserved per process/thread; 1 for long tasks.
    prefetch_multiplier: int = 1
    #: Seconds before ``SoftTimeLimitExceeded`` is raised inside the task.
    soft_time_limit: int = 60
    #: Seconds before the child process running the task is killed.
    time_limit: int = 90
    #: Recycle a prefork child after this many tasks (``None``: never).
    max_tasks_per_child: int | None = None
    #: Deliveries of one task before its status row is failed for good.
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"Pool name {self.name!r} must be a lowercase identifier.")
        if self.pool not in ("prefork", "threads"):
            raise ValueError(f"Pool {self.name!r}: pool type {self.pool!r} is not prefork or threads.")
        if not 0 < self.soft_time_limit < self.time_limit:
            raise ValueError(
                f"Pool {self.name!r}: soft_time_limit ({self.soft_time_limit}) must be "
                f"positive and below time_limit ({self.time_limit})."
            )
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"Pool {self.name!r}: concurrency must be at least 1.")
        if self.prefetch_multiplier < 1 or self.max_attempts < 1:
            raise ValueError(f"Pool {self.name!r}: prefetch_multiplier and max_attempts must be at least 1.")

    @property
    def queue(self) -> str:
        """Return the name of the queue this pool consumes."""
        return self.name

    @property
    def lease_seconds(self) -> int:
        """Return how long a claimed task may run before another worker may reclaim it."""
        return self.time_limit + margin(self.time_limit, LEASE_MARGIN)

    def worker_args(self) -> list[str]:
        """Return the ``celery worker`` options that start this pool."""
        return ["-Q", self.queue, "-n", f"{self.name}@%h"]


DEFAULT = Pool(
    name="default",
    purpose="short general tasks",
    pool="prefork",
    concurrency=2,
    prefetch_multiplier=4,
    soft_time_limit=30,
    time_limit=60,
    max_tasks_per_child=1000,
    max_attempts=5,
)
IMAGES = Pool(
    name="images",
    purpose="CPU-bound image work, one process per core",
    pool="prefork",
    concurrency=None,
    prefetch_multiplier=1,
    soft_time_limit=120,
    time_limit=150,
    max_tasks_per_child=200,
    max_attempts=3,
)
EMAILS = Pool(
    name="emails",
    purpose="I/O-bound e-mail sending, many threads",
    pool="threads",
    concurrency=16,
    prefetch_multiplier=4,
    soft_time_limit=60,
    time_limit=90,
    max_attempts=8,
)
REPORTS = Pool(
    name="reports",
    purpose="long-running reports, one at a time",
    pool="prefork",
    concurrency=1,
    prefetch_multiplier=1,
    soft_time_limit=1500,
    time_limit=1800,
    max_tasks_per_child=20,
    max_attempts=3,
)

#: Every pool; the first one is the default queue. Add a pool here and nowhere else.
POOLS: tuple[Pool, ...] = (DEFAULT, IMAGES, EMAILS, REPORTS)


def queue_names(pools: Iterable[Pool] = POOLS) -> tuple[str, ...]:
    """Return the queue names of ``pools`` in registry order."""
    return tuple(p.queue for p in pools)


def by_queue(queue: str, pools: Iterable[Pool] = POOLS) -> Pool:
    """Return the pool consuming ``queue`` or raise :class:`UnknownQueueError`."""
    pools = tuple(pools)
    for p in pools:
        if p.queue == queue:
            return p
    raise UnknownQueueError(queue, queue_names(pools))


def scaled(pools: Iterable[Pool], limits: Mapping[str, tuple[int, int]]) -> tuple[Pool, ...]:
    """Return ``pools`` with (soft, hard) time limits replaced per pool name, for tests."""
    return tuple(
        dataclasses.replace(p, soft_time_limit=limits[p.name][0], time_limit=limits[p.name][1])
        if p.name in limits
        else p
        for p in pools
    )


def active() -> tuple[Pool, ...]:
    """Return the pools in force: ``settings.WORKER_POOLS`` (test settings shorten limits)."""
    from django.conf import settings

    return tuple(getattr(settings, "WORKER_POOLS", POOLS))


def kombu_queues(pools: Iterable[Pool] = POOLS) -> tuple[Any, ...]:
    """Return the kombu queue declarations (``task_queues``) for ``pools``."""
    from kombu import Exchange, Queue

    return tuple(Queue(p.queue, Exchange(p.queue, type="direct"), routing_key=p.queue) for p in pools)


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> dict[str, str] | None:
    """Route a task to the queue of the ``worker_pool`` it was declared with (``task_routes``).

    Declare the pool with the task: ``@shared_task(worker_pool=pools.IMAGES)``. ``send_task`` by name
    is routed the same way, through the registered task.
    """
    if task is None:
        from celery import current_app

        task = current_app.tasks.get(name)
    pool = getattr(task, "worker_pool", None)
    return {"queue": pool.queue} if isinstance(pool, Pool) else None


def soft_shutdown_timeout(pools: Iterable[Pool] = POOLS) -> int:
    """Return how long a stopping worker lets running tasks finish before it requeues them.

    :data:`SOFT_SHUTDOWN_TIMEOUT`, but at most half the shortest soft time limit: a task that needs
    longer is better requeued for a worker that stays than waited for by one that is leaving.
    """
    return max(1, min(SOFT_SHUTDOWN_TIMEOUT, *(p.soft_time_limit // 2 for p in pools)))


def stop_grace_period(pool: Pool, pools: Iterable[Pool] = POOLS) -> int:
    """Return the orchestrator's grace period for ``pool``'s worker: the soft shutdown plus a margin.

    The soft shutdown is one setting for every worker, so today every pool gets the same period.
    """
    return soft_shutdown_timeout(pools) + GRACE_MARGIN


def visibility_timeout(pools: Iterable[Pool] = POOLS) -> int:
    """Return the Redis visibility timeout: above every pool's lease, so no running task is redelivered."""
    longest = max(p.lease_seconds for p in pools)
    return longest + margin(longest, VISIBILITY_MARGIN)


def restore_interval(pools: Iterable[Pool] = POOLS) -> int:
    """Return how often, in seconds, a worker looks for messages whose visibility timeout has passed."""
    return max(1, min(10, visibility_timeout(pools) // 10))


def broker_transport_options(broker_url: str, run_dir: Path, pools: Iterable[Pool] = POOLS) -> dict[str, Any]:
    """Return ``broker_transport_options`` for ``broker_url`` (Redis or the local filesystem)."""
    if broker_url.startswith("filesystem"):
        folder = str(run_dir / "broker" / "messages")
        control = str(run_dir / "broker" / "control")
        return {"data_folder_in": folder, "data_folder_out": folder, "control_folder": control}
    if broker_url.startswith(("redis", "rediss")):
        pools = tuple(pools)
        # kombu looks for overdue messages every interval x throttle seconds (100 s by default): scan on every
        # tick, and tick often enough that a message of a SIGKILLed worker returns soon after the timeout.
        return {
            "visibility_timeout": visibility_timeout(pools),
            "unacked_restore_interval": restore_interval(pools),
            "unacked_restore_throttle": 1,
        }
    return {}


def celery_settings(registry: tuple[Pool, ...], broker_url: str, result_backend: str, run_dir: Path) -> dict[str, Any]:
    """Return the ``CELERY_*`` settings derived from the registry, so no number is typed twice."""
    return {
        "CELERY_TASK_QUEUES": kombu_queues(registry),
        "CELERY_TASK_DEFAULT_QUEUE": registry[0].queue,
        "CELERY_BROKER_TRANSPORT_OPTIONS": broker_transport_options(broker_url, run_dir, registry),
        "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS": broker_transport_options(result_backend, run_dir, registry),
        "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT": soft_shutdown_timeout(registry),
    }
