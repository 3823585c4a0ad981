"""Celery and kombu wiring derived from the pool registry: queues, routes, transport options, pools in force."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from celery.exceptions import QueueNotFound
from kombu import Exchange, Queue

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.core.celery_internals import Router

__all__ = [
    "AMQP_SCHEMES",
    "RegistryRouter",
    "broker_priority",
    "broker_transport_options",
    "by_queue",
    "dead_letter_queue",
    "is_amqp",
    "is_redis",
    "kombu_queues",
    "pools_in_force",
    "result_backend_transport_options",
    "route_task",
]


def pools_in_force() -> tuple[pools.Pool, ...]:
    """Return the pools in force: ``settings.WORKER_POOLS`` (the test settings shorten the limits)."""
    from django.conf import settings

    return tuple(getattr(settings, "WORKER_POOLS", pools.POOLS))


def by_queue(queue: str) -> pools.Pool:
    """Return the pool in force that consumes ``queue``, or raise :class:`pools.UnknownQueueError`."""
    return pools.by_queue(queue, pools_in_force())


def broker_priority(priority: int | None) -> int | None:
    """Return the Redis message priority (0 first, steps 0/3/6/9) of a ``django.tasks`` priority (-100 to 100).

    ``None`` (a Celery call) stays ``None``: kombu sends it as 0, the first step, as every message of the Celery
    API and of the upkeep tasks. kombu's Redis transport keeps one list per step and pops them in order, so a
    queue has four levels: above the default (1 to 100) shares the first step with the Celery API; the default
    (0) is next; below it, -1 to -50 and -51 to -100.
    """
    if priority is None:
        return None
    if priority > 0:
        return 0
    if priority == 0:
        return 3
    return 6 if priority >= -50 else 9


#: URL schemes of RabbitMQ (kombu's py-amqp transport).
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
#: URL schemes of Redis: one server, or the master a group of Sentinels names (``sentinel://h1:26379;sentinel://h2:26379``).
REDIS_SCHEMES = ("redis", "rediss", "sentinel")
#: The Sentinel master name when the transport options do not give one (Sentinel's own example name).
DEFAULT_SENTINEL_MASTER = "mymaster"


def is_amqp(url: str) -> bool:
    """Return whether ``url`` points at RabbitMQ."""
    return url.partition("://")[0] in AMQP_SCHEMES


def kombu_queues(registry: Iterable[pools.Pool] = pools.POOLS, broker_url: str = "") -> tuple[Queue, ...]:
    """Return the kombu queue declarations (``task_queues``) of ``registry``: quorum queues on RabbitMQ."""
    if is_amqp(broker_url):
        return tuple(quorum_queue(p) for p in registry)
    return tuple(Queue(p.queue, Exchange(p.queue, type="direct"), routing_key=p.queue) for p in registry)


def quorum_queue(pool: pools.Pool) -> Queue:
    """Return ``pool``'s RabbitMQ queue: replicated, redeliveries capped, dead letters kept in its own queue."""
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": pool.delivery_limit,
        # The default exchange routes by queue name: the dead letters go straight to <pool>.dead.
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": pool.dead_letter_queue,
        # At-least-once dead-lettering: a message is removed only once the dead-letter queue confirmed it;
        # RabbitMQ requires reject-publish overflow for it (no length limit is set, so it never rejects).
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    # A topic exchange: native delayed delivery (countdown, ETA, retries) hands a due message back to the
    # pool's exchange with a routing key prefixed by its delay bits, which a direct exchange would not route.
    return Queue(pool.queue, Exchange(pool.queue, type="topic"), routing_key=pool.queue, queue_arguments=arguments)


def dead_letter_queue(pool: pools.Pool) -> Queue:
    """Return the declaration of ``pool``'s dead-letter queue (a quorum queue on the default exchange)."""
    return Queue(pool.dead_letter_queue, routing_key=pool.dead_letter_queue, queue_arguments={"x-queue-type": "quorum"})


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> dict[str, str] | None:
    """Route a task to the queue of the ``worker_pool`` it was declared with (``task_routes``).

    Declare the pool with the task: ``@shared_task(worker_pool=pools.IMAGES)``. ``send_task`` by name
    is routed the same way, through the registered task.
    """
    if task is None:
        from celery import current_app

        task = current_app.tasks.get(name)
    pool = getattr(task, "worker_pool", None)
    return {"queue": pool.queue} if isinstance(pool, pools.Pool) else None


class RegistryRouter(Router):
    """Route like Celery, but refuse a queue outside the registry with :class:`pools.UnknownQueueError`."""

    def expand_destination(self, route: Any) -> Any:
        queue = route if isinstance(route, str) else route.get("queue")
        try:
            return super().expand_destination(route)
        except QueueNotFound:
            raise pools.UnknownQueueError(str(queue), list(self.queues)) from None


def is_redis(url: str) -> bool:
    """Return whether ``url`` points at Redis, directly or through Sentinel."""
    return url.partition("://")[0] in REDIS_SCHEMES


def broker_transport_options(
    broker_url: str,
    run_dir: Path,
    registry: Iterable[pools.Pool] = pools.POOLS,
    *,
    sentinel_master: str = DEFAULT_SENTINEL_MASTER,
) -> dict[str, Any]:
    """Return ``broker_transport_options`` for ``broker_url`` (Redis, RabbitMQ or the local filesystem)."""
    if broker_url.startswith("filesystem"):
        folder = str(run_dir / "broker" / "messages")
        control = str(run_dir / "broker" / "control")
        return {"data_folder_in": folder, "data_folder_out": folder, "control_folder": control}
    if is_amqp(broker_url):
        # Publisher confirms: a publish returns once RabbitMQ has the message (on a quorum queue's majority).
        return {"confirm_publish": True}
    if is_redis(broker_url):
        registry = tuple(registry)
        # kombu looks for overdue messages every interval x throttle seconds (100 s by default): scan on every
        # tick, and tick often enough that a message of a SIGKILLed worker returns soon after the timeout.
        options: dict[str, Any] = {
            "visibility_timeout": pools.visibility_timeout(registry),
            "unacked_restore_interval": pools.restore_interval(registry),
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": pools.unacked_mutex_expire(registry),
        }
        if broker_url.startswith("sentinel"):
            # kombu's Sentinel transport and Celery's Sentinel result backend both ask the Sentinels for this master.
            options["master_name"] = sentinel_master
        return options
    return {}


def result_backend_transport_options(
    backend_url: str,
    run_dir: Path,
    registry: Iterable[pools.Pool] = pools.POOLS,
    *,
    publish_timeout: float = 2.0,
    sentinel_master: str = DEFAULT_SENTINEL_MASTER,
) -> dict[str, Any]:
    """Return ``result_backend_transport_options``: the broker's, plus a reconnect loop bounded by ``publish_timeout``.

    ``send_task`` subscribes to the result in the Redis backend before it publishes; with Redis down,
    the backend's default loop (20 retries, one second apart) held a web request for 20 s.
    """
    options = broker_transport_options(backend_url, run_dir, registry, sentinel_master=sentinel_master)
    if is_redis(backend_url):
        step = publish_timeout / 3
        options["retry_policy"] = {
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": step,
            "interval_max": step,
            "timeout": publish_timeout,
        }
    return options
