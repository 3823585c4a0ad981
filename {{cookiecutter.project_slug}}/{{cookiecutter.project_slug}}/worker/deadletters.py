"""RabbitMQ dead-letter queues, one per pool: declared by the pool's workers, counted and requeued on request."""

from __future__ import annotations

from typing import Any

from celery import bootsteps
from celery.utils.log import get_logger
from kombu import Connection, Producer
from kombu.exceptions import ChannelError

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker.queues import dead_letter_queue, is_amqp, pools_in_force

__all__ = ["DeadLetterQueues", "dead_letter_count", "requeue_dead_letters"]

#: Headers RabbitMQ adds to a dead-lettered or redelivered message; a requeued message starts afresh without them.
BROKER_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-delivery-count",
)

logger = get_logger(__name__)


class DeadLetterQueues(bootsteps.StartStopStep):
    """Consumer step that declares the dead-letter queue of every pool queue this worker consumes.

    RabbitMQ drops a message dead-lettered to a queue that does not exist: the queue must be there before
    the first message passes its delivery limit, and only a consumer can make a message pass it.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def include_if(self, parent: Any) -> bool:
        return is_amqp(parent.app.conf.broker_url or "")

    def start(self, parent: Any) -> None:
        consumed = {queue.name for queue in parent.task_consumer.queues}
        registry = [pool for pool in pools_in_force() if pool.queue in consumed]
        with parent.app.connection_for_write() as connection:
            channel = connection.default_channel
            for pool in registry:
                dead_letter_queue(pool).bind(channel).declare()
                logger.info("Dead-letter queue %s declared for the %s pool", pool.dead_letter_queue, pool.name)


def dead_letter_count(connection: Connection, pool: pools.Pool) -> int:
    """Return how many messages wait in ``pool``'s dead-letter queue (0 when no worker declared it yet)."""
    channel: Any = connection.channel()
    try:
        return int(channel.queue_declare(queue=pool.dead_letter_queue, passive=True).message_count)
    except ChannelError:
        return 0
    finally:
        channel.close()


def requeue_dead_letters(connection: Connection, pool: pools.Pool, limit: int | None = None) -> int:
    """Publish ``pool``'s dead letters to its queue again (at most ``limit``), and return how many moved.

    Each message is republished with publisher confirms before its dead copy is acknowledged: a crash in
    between leaves it twice, never nowhere, and the status row of an idempotent task absorbs the repeat.
    """
    moved = 0
    queue = dead_letter_queue(pool).bind(connection.default_channel)
    producer = Producer(connection.channel())
    while limit is None or moved < limit:
        message = queue.get(no_ack=False, accept=["json"])
        if message is None:
            break
        headers = {k: v for k, v in (message.headers or {}).items() if k not in BROKER_HEADERS}
        properties: dict[str, Any] = {
            k: v for k, v in message.properties.items() if k in ("correlation_id", "reply_to", "priority")
        }
        producer.publish(
            message.body,
            exchange=pool.queue,
            routing_key=pool.queue,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=2,
            **properties,
        )
        message.ack()
        moved += 1
    if moved:
        logger.warning("Requeued %d dead-lettered message(s) from %s to %s", moved, pool.dead_letter_queue, pool.queue)
    return moved
