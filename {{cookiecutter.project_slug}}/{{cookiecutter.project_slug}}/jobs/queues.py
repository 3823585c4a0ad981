"""How many messages each pool's queue holds, asked of the broker itself: waiting, unacknowledged, dead."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

from kombu.exceptions import ChannelError, OperationalError

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.core.http import ConflictError, NotFoundError
from {{ cookiecutter.project_slug }}.worker.deadletters import dead_letter_count, requeue_dead_letters
from {{ cookiecutter.project_slug }}.worker.queues import by_queue, is_amqp, is_redis, pools_in_force

#: RabbitMQ's management API port, where the management URL is not configured.
MANAGEMENT_PORT = 15672
#: Seconds a management API request may take before the counts are reported as unknown.
MANAGEMENT_TIMEOUT = 2.0


class ManagementAPIError(RuntimeError):
    """RabbitMQ's management API did not answer the queue counts."""


def queue_depths() -> dict[str, Any]:
    """Return per pool queue: messages waiting, held unacknowledged by workers, dead-lettered; and what is owed.

    ``owed`` (waiting + unacknowledged) is what the pool still has to work off: the autoscaler's measure.
    A count the broker cannot give is ``None`` (dead letters on Redis, which has none).
    """
    from django.conf import settings

    from {{ cookiecutter.project_slug }}.worker.app import app

    registry = pools_in_force()
    names = [p.queue for p in registry]
    waiting: dict[str, int | None] = {}
    unacked: dict[str, int | None] = dict.fromkeys(names)
    dead: dict[str, int | None] = dict.fromkeys(names)
    broker_url = app.conf.broker_url or ""
    connection = app.connection_for_read(connect_timeout=2)
    transport = str(connection.transport_cls)
    unreachable: tuple[type[BaseException], ...] = (OperationalError, *connection.connection_errors)
    error: str | None = None
    try:
        with connection:
            for pool in registry:
                waiting[pool.queue] = _waiting(connection, pool.queue)
            if is_redis(broker_url):
                unacked.update(_redis_unacked(connection, names))
            if is_amqp(broker_url):
                dead = {pool.queue: dead_letter_count(connection, pool) for pool in registry}
    except unreachable as exc:
        # The panel says the broker is unreachable rather than showing empty queues.
        none = dict.fromkeys(names)
        return {"transport": transport, "queues": none, "unacked": none, "dead": none, "owed": none, "error": str(exc)}
    if is_amqp(broker_url):
        try:
            unacked.update(_rabbitmq_unacked(management_url(broker_url, settings.RABBITMQ_MANAGEMENT_URL), names))
        except ManagementAPIError as exc:
            error = str(exc)
    owed = {
        q: None if waiting.get(q) is None or unacked[q] is None else int(waiting[q] or 0) + int(unacked[q] or 0)
        for q in names
    }
    return {"transport": transport, "queues": waiting, "unacked": unacked, "dead": dead, "owed": owed, "error": error}


def requeue_dead(queue: str) -> int:
    """Move the dead-lettered messages of the pool consuming ``queue`` back to its queue; return how many moved."""
    from {{ cookiecutter.project_slug }}.worker.app import app

    try:
        pool = by_queue(queue)
    except pools.UnknownQueueError as exc:
        raise NotFoundError(str(exc)) from None
    if not is_amqp(app.conf.broker_url or ""):
        raise ConflictError(
            f"Dead-letter queues exist on RabbitMQ only; the broker is {str(app.conf.broker_url).partition(':')[0]}://."
        )
    with app.connection_for_write() as connection:
        return requeue_dead_letters(connection, pool)


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


def _redis_unacked(connection: Any, queues: list[str]) -> dict[str, int]:
    """Return the messages workers reserved per queue: kombu keeps them in one hash, ``[message, exchange, key]``."""
    channel = connection.default_channel
    counts: Counter[str] = Counter()
    with channel.conn_or_acquire() as client:
        for raw in client.hvals(channel.unacked_key):
            try:
                _message, _exchange, routing_key = json.loads(raw)
            except (TypeError, ValueError):
                continue
            counts[routing_key] += 1
    return {queue: counts.get(queue, 0) for queue in queues}


def management_url(broker_url: str, configured: str = "") -> str:
    """Return the management API's base URL: ``configured``, or the broker's host and user on port 15672."""
    if configured:
        return configured.rstrip("/") + "/"
    # A cluster's URL lists every node (`amqp://a//;amqp://b//`): the first node's API speaks for the cluster.
    parts = urllib.parse.urlsplit(broker_url.split(";", 1)[0])
    scheme = "https" if parts.scheme == "amqps" else "http"
    user = f"{parts.username or 'guest'}:{parts.password or 'guest'}@"
    return f"{scheme}://{user}{parts.hostname or 'localhost'}:{MANAGEMENT_PORT}/"


def _rabbitmq_unacked(base_url: str, queues: list[str]) -> dict[str, int]:
    """Return the unacknowledged messages per queue from RabbitMQ's management API (AMQP cannot tell)."""
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname or "localhost"
    netloc = f"{host}:{parts.port}" if parts.port else host
    api = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/api/queues/%2F/", "", ""))
    credentials = f"{urllib.parse.unquote(parts.username or 'guest')}:{urllib.parse.unquote(parts.password or 'guest')}"
    headers = {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
    found: dict[str, int] = {}
    for queue in queues:
        request = urllib.request.Request(api + urllib.parse.quote(queue, safe=""), headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=MANAGEMENT_TIMEOUT) as response:  # noqa: S310 - http(s) only
                found[queue] = int(json.load(response).get("messages_unacknowledged", 0))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                found[queue] = 0  # not declared yet: nothing held
                continue
            raise ManagementAPIError(f"RabbitMQ management API at {netloc} answered {exc.code} for {queue!r}") from exc
        except (OSError, ValueError) as exc:
            raise ManagementAPIError(
                f"RabbitMQ management API at {netloc} did not answer ({exc}); set RABBITMQ_MANAGEMENT_URL"
            ) from exc
    return found
