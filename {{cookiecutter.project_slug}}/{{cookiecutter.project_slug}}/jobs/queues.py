"""How many messages wait in each pool's queue, asked of the broker itself."""

from __future__ import annotations

from typing import Any

from kombu.exceptions import ChannelError, OperationalError

from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force


def queue_depths() -> dict[str, Any]:
    """Return the messages waiting in the broker per pool queue (not those already reserved by a worker)."""
    from {{ cookiecutter.project_slug }}.worker.app import app

    depths: dict[str, int | None] = {}
    connection = app.connection_for_read(connect_timeout=2)
    transport = str(connection.transport_cls)
    unreachable: tuple[type[BaseException], ...] = (OperationalError, *connection.connection_errors)
    try:
        with connection:
            for pool in pools_in_force():
                depths[pool.queue] = _waiting(connection, pool.queue)
    except unreachable as exc:
        # The panel says the broker is unreachable rather than showing empty queues.
        return {"transport": transport, "queues": {p.queue: None for p in pools_in_force()}, "error": str(exc)}
    return {"transport": transport, "queues": depths, "error": None}


def _waiting(connection: Any, queue: str) -> int:
    # A passive declare reports the transport's own count: LLEN over the priority lists on Redis,
    # message files on the filesystem broker, the queue's ready count on RabbitMQ.
    channel = connection.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except ChannelError:
        return 0  # the broker has never seen the queue, or it is empty and was removed (Redis)
    finally:
        channel.close()
