"""kombu's Redis and Sentinel transports, with a channel close that survives a broker gone during a BRPOP."""

from __future__ import annotations

from queue import Empty
from typing import Any

from kombu.transport import redis


class FinishingClose:
    """Makes a Redis channel finish closing when the read of its pending BRPOP fails on a lost connection.

    kombu's close first reads the reply of a BRPOP in flight; with Redis gone that read raises, the close stops
    before the channel is marked closed, and the worker's consumer detaches the transport from its connection.
    The consumer then closes the connection again, the channel tries once more to requeue its unacknowledged
    messages through a transport without a connection, and the worker exits with
    ``AttributeError: 'NoneType' object has no attribute 'hostname'`` instead of reconnecting.
    """

    def close(self) -> None:
        channel: Any = self  # kombu's stubs leave out the transport's BRPOP state
        if channel._in_poll:
            try:
                channel._brpop_read()
            except Empty:
                pass
            except channel.connection_errors:
                # No reply is coming from a lost connection. The rest of the close runs now, while the transport
                # still knows the broker: its requeue of the unacknowledged messages fails too if Redis is down,
                # and they wait in Redis's unacked hash for the visibility timeout (the status row recovers the
                # calls sooner), as for a worker that dies.
                pass
        super().close()  # type: ignore[misc]  # the channel class this is mixed into


class Channel(FinishingClose, redis.Channel):
    """kombu's Redis channel with the close above."""


class SentinelChannel(FinishingClose, redis.SentinelChannel):
    """kombu's Sentinel channel (a Redis channel that asks the Sentinels for the master) with the close above."""


class Transport(redis.Transport):
    """kombu's Redis transport with the channel above."""

    Channel = Channel


class SentinelTransport(redis.SentinelTransport):
    """kombu's Sentinel transport with the channel above."""

    Channel = SentinelChannel
