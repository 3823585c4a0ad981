"""Emptying the test broker between tests: every queue, with what a stopped worker held and retries counting down."""

from __future__ import annotations

from functools import partial
from typing import Any

import redis
from amqp.exceptions import NotFound
from kombu.transport.native_delayed_delivery import MAX_LEVEL, level_name

from {{ cookiecutter.project_slug }}.worker.app import app as celery_app
from {{ cookiecutter.project_slug }}.worker.queues import is_amqp, kombu_queues, pools_in_force

from support.servers import wait_until

__all__ = ["consumers", "empty_queues"]


def empty_queues(broker: str, redis_url: str, *, consumers_gone_within: float = 30.0) -> None:
    """Empty every pool queue of ``broker`` and the Redis database of ``redis_url`` (results, or the Redis broker).

    On RabbitMQ, the queues of native delayed delivery are purged too: a retry with a countdown waits there and
    would run in a later test (seen in CI: an earlier test's retries ran in the rolling restart). Then each pool
    queue is purged once no consumer is left on it: a worker that has just exited may still hold messages
    unacknowledged until the node has closed its connection, a purge leaves those, and they come back ready.
    Raise ``TimeoutError`` naming the queue if a consumer stays longer than ``consumers_gone_within`` seconds.
    """
    redis.Redis.from_url(redis_url).flushdb()
    if not is_amqp(broker):
        return
    with celery_app.connection_for_write() as connection:
        _purge_delayed(connection)
        channel: Any = connection.default_channel
        for pool in pools_in_force():
            for queue in kombu_queues([pool], broker):
                queue.bind(channel).declare()
                gone = partial(_unconsumed, channel, queue.name)
                wait_until(gone, consumers_gone_within, f"the consumers of queue {queue.name} to go")
                queue.bind(channel).purge()
            # Gone, not emptied: the pool's workers must declare it themselves (worker/deadletters.py).
            channel.queue_delete(pool.dead_letter_queue)


def _purge_delayed(connection: Any) -> None:
    """Purge the queues of native delayed delivery, where messages with a countdown wait.

    Highest level first: a message expiring out of one level moves one level down, into a queue not yet purged,
    and out of the last into a pool queue, which is purged after these.
    """
    for level in range(MAX_LEVEL, -1, -1):
        channel = connection.channel()
        try:
            channel.queue_purge(level_name(level))
        except NotFound:
            return  # not declared yet: no worker of this node has started
        finally:
            if channel.is_open:
                channel.close()


def _unconsumed(channel: Any, queue: str) -> bool:
    return consumers(channel, queue) == 0


def consumers(channel: Any, queue: str) -> int:
    """Return how many consumers RabbitMQ has on ``queue`` now (AMQP's answer, not the management API's sample)."""
    return int(channel.queue_declare(queue=queue, passive=True).consumer_count)
