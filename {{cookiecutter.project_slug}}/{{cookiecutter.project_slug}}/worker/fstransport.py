"""kombu's filesystem transport for the embedded stack, drained in short slices so a stopping worker exits at once."""

from __future__ import annotations

from typing import Any

from kombu.transport import filesystem

#: Seconds between two looks at the message folder, and the longest a worker's loop waits before it checks
#: whether it should stop (kombu polls every second; Celery's loop for this transport drains 2 s at a time).
POLL_SECONDS = 0.1


class Transport(filesystem.Transport):
    """The filesystem transport whose ``drain_events`` returns within :data:`POLL_SECONDS`.

    The transport has no event loop, so Celery's worker runs its blocking loop, which calls ``drain_events`` with
    a 2 s timeout and only then sees that a SIGTERM asked it to stop: an idle worker took 2 s more to exit.
    """

    polling_interval = POLL_SECONDS

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        # None means "until a message comes", as kombu's other callers (result polling) expect: left as it is.
        if timeout is not None:
            timeout = min(timeout, POLL_SECONDS)
        return super().drain_events(connection, timeout=timeout, **kwargs)
