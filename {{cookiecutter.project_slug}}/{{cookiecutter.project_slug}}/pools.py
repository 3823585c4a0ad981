"""The worker-pool registry: the one place that names queues and how they are worked.

Standard library only: the bake hook loads the process-file renderer, and with it this module, by
path, where neither Django nor Celery is installed. The Celery and kombu wiring derived from it lives
in ``{{ cookiecutter.project_slug }}.worker.queues``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

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
#: :attr:`Pool.soft_shutdown_timeout`).
SOFT_SHUTDOWN_TIMEOUT = 20
#: A pool whose hard time limit is at most this many seconds runs an idempotent task's body and its success
#: write in one database transaction by default (:attr:`Pool.atomic_effects`): held open that long at most.
ATOMIC_EFFECTS_MAX_TIME_LIMIT = 300
#: Seconds between the end of the soft shutdown and the orchestrator's SIGKILL: the cold shutdown cancels
#: the remaining tasks, requeues their messages and closes the broker connection in this time.
GRACE_MARGIN = 10
#: RabbitMQ's own ``consumer_timeout`` (milliseconds in ``rabbitmq.conf``) when nobody sets it: 30 minutes.
RABBITMQ_DEFAULT_CONSUMER_TIMEOUT = 1800


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
    """One specialised worker pool and the queue it alone consumes.

    Both pool types enforce the time limits: prefork kills the child at the hard limit; the project's
    threads pool (``{{ cookiecutter.project_slug }}.worker.threadpool``) raises the exceptions inside the task's thread, at its next
    Python instruction, so a threads task must give its blocking calls (sockets) timeouts of their own.
    """

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
    #: Seconds before the task is stopped and reported as timed out (``TimeLimitExceeded``): a prefork child
    #: is killed, a threads task gets ``WorkerTerminate`` raised in its thread.
    time_limit: int = 90
    #: Recycle a prefork child after this many tasks (``None``: never).
    max_tasks_per_child: int | None = None
    #: Recycle a prefork child once its resident memory exceeds this many KiB, after its current task
    #: (``--max-memory-per-child``; ``None``: never). Prefork only.
    max_memory_per_child: int | None = None
    #: Deliveries of one task before its status row is failed for good.
    max_attempts: int = 5
    #: Whether an idempotent task's body and its success write share one database transaction (its
    #: database writes happen once); ``None``: when ``time_limit`` is at most :data:`ATOMIC_EFFECTS_MAX_TIME_LIMIT`.
    #: A task overrides it with ``atomic_effects`` (``{{ cookiecutter.project_slug }}.idempotency.base.IdempotentTask``).
    atomic_effects: bool | None = None
    #: Fewest and most worker replicas the autoscaler (KEDA, ``k8s/scaledobject-<pool>.yaml``) runs; 0 lets
    #: an idle pool scale to nothing.
    min_replicas: int = 1
    max_replicas: int = 4

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
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(
                f"Pool {self.name!r}: replicas must satisfy 0 <= min_replicas ({self.min_replicas}) <= "
                f"max_replicas ({self.max_replicas}) and max_replicas >= 1."
            )
        if self.max_memory_per_child is not None:
            if self.pool != "prefork":
                raise ValueError(
                    f"Pool {self.name!r}: max_memory_per_child ({self.max_memory_per_child}) needs a prefork pool; "
                    f"a {self.pool} pool has no child process to recycle. Use None."
                )
            if isinstance(self.max_memory_per_child, bool) or not isinstance(self.max_memory_per_child, int):
                raise ValueError(
                    f"Pool {self.name!r}: max_memory_per_child ({self.max_memory_per_child!r}) must be a whole "
                    "number of KiB or None."
                )
            if self.max_memory_per_child < 1024:
                raise ValueError(
                    f"Pool {self.name!r}: max_memory_per_child ({self.max_memory_per_child}) is in KiB and must be "
                    "at least 1024 (1 MiB), or None."
                )

    @property
    def queue(self) -> str:
        """Return the name of the queue this pool consumes."""
        return self.name

    @property
    def lease_seconds(self) -> int:
        """Return how long a claimed task may run before another worker may reclaim it."""
        return self.time_limit + margin(self.time_limit, LEASE_MARGIN)

    @property
    def dead_letter_queue(self) -> str:
        """Return the name of the queue RabbitMQ moves this pool's messages to past their delivery limit."""
        return f"{self.name}.dead"

    @property
    def delivery_limit(self) -> int:
        """Return the quorum queue's ``x-delivery-limit``: redeliveries allowed after the first delivery.

        RabbitMQ dead-letters a message returned more than this many times, so a message that kills its
        worker every time is delivered :attr:`max_attempts` times in all, as the status row allows.
        """
        return self.max_attempts - 1

    @property
    def scale_target(self) -> int:
        """Return the messages one replica holds at once (processes x prefetch): the autoscaler's target per replica.

        A pool of one process per core is counted as two cores.
        """
        return (self.concurrency or 2) * self.prefetch_multiplier

    @property
    def runs_atomic_effects(self) -> bool:
        """Return whether this pool's idempotent tasks run body and success write in one transaction."""
        if self.atomic_effects is not None:
            return self.atomic_effects
        return self.time_limit <= ATOMIC_EFFECTS_MAX_TIME_LIMIT

    @property
    def soft_shutdown_timeout(self) -> int:
        """Return how long this pool's stopping worker lets running tasks finish before it requeues them.

        :data:`SOFT_SHUTDOWN_TIMEOUT`, but at most half the pool's soft time limit: a task that needs
        longer is better requeued for a worker that stays than waited for by one that is leaving.
        """
        return max(1, min(SOFT_SHUTDOWN_TIMEOUT, self.soft_time_limit // 2))

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
    # Replacing a child stalls the worker for about 0.25 s: every 1,000 tasks that cost a quarter of a no-op
    # drain's throughput (make bench). A child that leaks is replaced by its memory, after the task that crossed it.
    max_tasks_per_child=10_000,
    max_memory_per_child=256 * 1024,
    max_attempts=5,
    # Every worker runs the recovery pass (idempotency/maintenance.py): the default pool never scales to zero.
    min_replicas=1,
    max_replicas=8,
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
    # A child that grew past 512 MiB (a huge image) is replaced after its task, before the OOM killer acts.
    max_memory_per_child=512 * 1024,
    max_attempts=3,
    min_replicas=0,
    max_replicas=4,
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
    min_replicas=1,
    max_replicas=4,
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
    min_replicas=0,
    max_replicas=2,
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
    """Return ``pools`` with (soft, hard) time limits replaced per pool name, for tests.

    Each keeps the atomic-effects choice its own limits made, so a shortened pool behaves as the deployed one.
    """
    return tuple(
        dataclasses.replace(
            p, soft_time_limit=limits[p.name][0], time_limit=limits[p.name][1], atomic_effects=p.runs_atomic_effects
        )
        if p.name in limits
        else p
        for p in pools
    )


def soft_shutdown_timeout(pools: Iterable[Pool] = POOLS) -> int:
    """Return the shortest soft shutdown of ``pools``: the default of a worker not started for one pool.

    A worker started with ``-Q <pool>`` uses its pool's own :attr:`Pool.soft_shutdown_timeout` instead.
    """
    return min(p.soft_shutdown_timeout for p in pools)


def stop_grace_period(pool: Pool) -> int:
    """Return the orchestrator's grace period for ``pool``'s worker: its soft shutdown plus a margin."""
    return pool.soft_shutdown_timeout + GRACE_MARGIN


def visibility_timeout(pools: Iterable[Pool] = POOLS) -> int:
    """Return the Redis visibility timeout: above every pool's lease, so no running task is redelivered."""
    longest = max(p.lease_seconds for p in pools)
    return longest + margin(longest, VISIBILITY_MARGIN)


def consumer_timeout(pools: Iterable[Pool] = POOLS) -> int:
    """Return the RabbitMQ ``consumer_timeout`` (seconds) the registry needs: the Redis visibility timeout's value.

    RabbitMQ closes the channel of a consumer that holds a message unacknowledged longer than this and
    redelivers the message, so it must outlast every pool's lease as the visibility timeout does; the
    ``reports`` pool's 30-minute hard limit puts it above RabbitMQ's 30-minute default.
    """
    return visibility_timeout(pools)


def restore_interval(pools: Iterable[Pool] = POOLS) -> int:
    """Return how often, in seconds, a worker looks for messages whose visibility timeout has passed."""
    return max(1, min(10, visibility_timeout(pools) // 10))


def unacked_mutex_expire(pools: Iterable[Pool] = POOLS) -> int:
    """Return how long kombu's Redis restore lock may be held: a few restore passes, not its 300 s default.

    A worker SIGKILLed while restoring overdue messages leaves the lock behind; until it expires no
    worker restores anything, whatever the visibility timeout says.
    """
    return max(10, 3 * restore_interval(pools))
