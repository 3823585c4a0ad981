"""`make dev`'s process runner: honcho, configured to stop each process as a deploy does and to restart a worker.

Plain ``honcho start`` sends SIGTERM to each process group, which reaches a prefork worker's pool children and
stops their tasks at once, then SIGKILLs everything 5 s later, before a busy worker's soft shutdown has requeued
its messages (the filesystem broker then loses them). Here honcho signals each process itself (the Procfile
``exec``s, so that is the worker's main process), waits the longest grace period of the registry (a pool's soft
shutdown plus the requeue margin, as compose and Kubernetes do), and starts again a worker, beat or Flower that
exits while the stack runs (a worker that lost its broker, or one stopped with ``kill -TERM``), instead of
stopping the whole stack.
"""

from __future__ import annotations

import datetime
import errno
import multiprocessing
import multiprocessing.queues
import os
import signal
import sys
import time
from collections import deque
from typing import Any

from honcho import command, compat, manager
from honcho.printer import Message

from {{ cookiecutter.project_slug }} import pools

#: Processes started again when they exit while the stack runs (compose's ``restart: unless-stopped``).
RESTARTED = ("worker_", "beat", "flower")
#: A process that exits this many times within RESTART_WINDOW seconds cannot start: the stack stops, as honcho does.
RESTART_LIMIT = 5
RESTART_WINDOW = 60.0


def kill_wait(registry: tuple[pools.Pool, ...] = pools.POOLS) -> int:
    """Return the seconds between the SIGTERM of Ctrl-C and the SIGKILL of what is left: the longest grace period."""
    return max(pools.stop_grace_period(p) for p in registry)


class MainProcessSignals(compat.ProcessManager):
    """Send SIGTERM to a process alone (not its pool children); SIGKILL still goes to its whole process group."""

    def terminate(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ESRCH):
                raise


class _Events(multiprocessing.queues.Queue):
    """honcho's event queue, where the stop of a restarted process becomes a restart instead of the stack's end."""

    def __init__(self, on_stop: Any) -> None:
        super().__init__(ctx=multiprocessing.get_context())
        self._on_stop = on_stop

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        message = super().get(block, timeout)
        if message.type == "stop":
            return self._on_stop(message) or message
        return message


class DevManager(manager.Manager):
    """honcho's Manager with the stop of a deploy (SIGTERM to the main process, the registry's wait) and restarts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._procmgr = MainProcessSignals()
        self.events = _Events(self._restart)
        self._exits: dict[str, deque[float]] = {}

    def _restart(self, message: Message) -> Message | None:
        """Start ``message``'s process again and return the line that says so; ``None`` to let honcho stop."""
        name = str(message.name)
        if self._terminating or not name.startswith(RESTARTED):
            return None
        exits = self._exits.setdefault(name, deque(maxlen=RESTART_LIMIT))
        exits.append(time.monotonic())
        if len(exits) == RESTART_LIMIT and exits[-1] - exits[0] < RESTART_WINDOW:
            return None
        entry = self._processes[name]
        entry["process"].join()
        entry["process"] = multiprocessing.Process(name=name, target=entry["obj"].run, args=(self.events, True))
        entry["process"].start()
        text = f"{name} exited (rc={message.data['returncode']}); starting it again\n"
        return Message(type="line", data=text, time=datetime.datetime.now(), name="system", colour=None)


def main(argv: list[str] | None = None) -> None:
    """Run ``honcho start`` (same arguments) with :class:`DevManager`."""
    # As in compose and Kubernetes: a worker's SIGTERM starts its soft shutdown, not a warm shutdown without limit.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    manager.KILL_WAIT = kill_wait()
    command.Manager = DevManager
    command.main(["start", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
