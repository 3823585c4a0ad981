"""The worker's shutdown signals, handled by its event loop between two callbacks, not on top of one.

Celery runs the whole cold shutdown in the SIGTERM handler (``REMAP_SIGTERM=SIGQUIT``): the soft shutdown's
wait, the consumer's ``basic_cancel``, the cancelled requests' events, the pool's stop. Python runs a handler on
the main thread between two bytecodes of whatever it was doing, and the main thread runs the event loop: it may
be halfway through writing an ack on the broker connection, holding py-amqp's frame-writer lock, which the
handler's ``basic_cancel`` then waits for, for good (issue 16, seen on RabbitMQ; the event dispatcher's and the
hub's locks were two more such, see worker/events.py and ``reentrant_hub_lock``).

Here the handler only notes the signal; a helper thread asks the event loop to run Celery's handler, which the
loop does at the start of its next turn, holding no lock, within milliseconds. When the loop does not take it
within :data:`FALLBACK` seconds (the worker is starting, reconnecting, or the loop is stuck in a call), the
signal is sent again and Celery's handler runs where it lands, as without this module. Only the first signal is
deferred: Celery's handler replaces itself (a second SIGTERM cancels the tasks at once, as Celery documents).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["FALLBACK", "defer_shutdown_signals"]

#: Seconds the event loop has to take a shutdown signal before Celery's handler runs wherever it lands.
FALLBACK = 2.0


class _DeferredHandler:
    """The shutdown signals' handler: Celery's own, run by the event loop ``hub``."""

    def __init__(self, hub: Any, handlers: dict[int, Callable[[int, Any], Any]]) -> None:
        self.hub = hub
        self.handlers = handlers
        self.pending: int | None = None  # the signal noted and not yet handled
        self.forced = False
        self.pid = os.getpid()
        self.noted = threading.Event()
        # Started with the shutdown signals blocked, so that the main thread alone receives them.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(handlers))
        try:
            threading.Thread(target=self._hand_over, name="shutdown-signals", daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def __call__(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:  # a pool child forked with this handler: no helper thread, no loop of its own
            self.handlers[signum](signum, frame)
            return
        if self.forced:  # the loop did not take it: Celery's handler, where the signal landed
            self.pending = None
            self.handlers[signum](signum, frame)
            return
        if self.pending is None:
            self.pending = signum
            self.noted.set()  # no lock the main thread could hold: only the helper thread waits on it

    def _hand_over(self) -> None:
        while True:
            self.noted.wait()
            self.noted.clear()
            # From another thread than the loop's, so call_soon wakes the loop from its poll.
            self.hub.call_soon(self._run)
            time.sleep(FALLBACK)
            signum = self.pending
            if signum is not None:
                self.forced = True
                signal.pthread_kill(threading.main_thread().ident or 0, signum)

    def _run(self) -> None:
        signum, self.pending = self.pending, None
        if signum is not None:
            self.handlers[signum](signum, None)


def defer_shutdown_signals(hub: Any, signums: Iterable[int]) -> None:
    """Have the event loop ``hub`` run the handlers now installed for ``signums`` (see the module docstring)."""
    handlers = {signum: handler for signum in signums if callable(handler := signal.getsignal(signum))}
    if handlers:
        deferred = _DeferredHandler(hub, handlers)
        for signum in handlers:
            signal.signal(signum, deferred)
