"""The worker's event dispatcher: its buffered task events are published by the event loop alone.

Celery's dispatcher buffers task events (``task-received``, ``task-started``, ``task-succeeded``...) and
asks the event loop to publish them, except that the send that fills the buffer (24 events) publishes them
all at once, in whatever thread and moment that send happens, under the dispatcher's lock, a plain
``threading.Lock``. Two hangs until SIGKILL followed (issue 16, seen on RabbitMQ with the threads pool, where
each publish waits for the broker's confirm, long enough to be caught in it):

- The cold shutdown runs in the SIGTERM handler, on the main thread, which may be in the middle of a flush,
  holding the lock. The handler sends events too (``task-cancelled`` for each cancelled request; and
  ``task-received`` for a message that the consumer's ``basic_cancel`` reads while it waits for its
  reply): when one of them fills the buffer, the handler waits for the lock its own thread holds, for good,
  and every task thread after it.
- The threads pool's task threads send their events themselves, so the one that fills the buffer publishes
  on the events connection, whose socket the event loop also reads (for broker heartbeats), in another thread:
  py-amqp is not thread-safe, and the loop can read the confirm a task thread waits for.

Here a send never publishes: it buffers and asks the loop, which flushes on its next turn, on the main thread,
outside any signal handler. A signal handler on the main thread can still interrupt that flush, but none of the
events it sends needs the lock. Without an event loop (no ``on_send_buffered``) Celery buffers nothing, and
this dispatcher is Celery's.
"""

from __future__ import annotations

import sys
from typing import Any

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher as CeleryEventDispatcher

__all__ = ["EventDispatcher", "WorkerEvents"]


class EventDispatcher(CeleryEventDispatcher):
    """Celery's dispatcher, whose buffer the event loop alone flushes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The event loop's flush, set when the worker has one (celery-types does not declare it).
        if getattr(self, "on_send_buffered", None) is not None:
            # Never full: send() calls on_send_buffered (a flush on the loop) instead of flushing itself.
            self.buffer_limit = sys.maxsize


class WorkerEvents(Events):
    """``app.events``, whose ``Dispatcher`` (what the worker's Events step creates) is the one above."""

    dispatcher_cls = f"{__name__}:EventDispatcher"
