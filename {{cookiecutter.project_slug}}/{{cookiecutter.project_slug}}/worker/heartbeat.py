"""A heartbeat file per worker process, written once it consumes, and the cheap liveness check that reads it.

``celery inspect ping`` costs seconds of CPU and fails while the broker is down; a file that the
worker's own event loop touches every few seconds tells an orchestrator what it needs to know.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path
from typing import Any

from celery import bootsteps, signals
from celery.utils.log import get_logger

#: Seconds between two touches of the heartbeat file.
INTERVAL = 5.0
#: A file older than this many seconds means the worker is stuck or gone.
MAX_AGE = 60.0
NO_REMAP_WARNING = (
    "REMAP_SIGTERM is not SIGQUIT: SIGTERM will wait for running tasks without limit (warm shutdown) instead "
    "of requeueing them after the soft shutdown timeout; set REMAP_SIGTERM=SIGQUIT in the worker's environment."
)

logger = get_logger(__name__)


def heartbeat_dir() -> Path:
    """Return the folder of heartbeat files (``WORKER_HEARTBEAT_DIR`` in settings)."""
    from django.conf import settings

    return Path(settings.WORKER_HEARTBEAT_DIR)


def heartbeat_path(pool_name: str, pid: int, directory: Path | None = None) -> Path:
    """Return the heartbeat file of the worker process ``pid`` of ``pool_name`` on this host."""
    # One file per worker process: two workers of a pool on one host (or a worker and its replacement) each
    # keep their own, and the first to stop removes only its own.
    return (directory or heartbeat_dir()) / f"{pool_name}.{pid}.alive"


def heartbeat_paths(pool_name: str, directory: Path | None = None) -> list[Path]:
    """Return the heartbeat files of ``pool_name``'s worker processes on this host, alive or left by a dead one."""
    return sorted((directory or heartbeat_dir()).glob(f"{glob.escape(pool_name)}.*.alive"))


class Heartbeat(bootsteps.StartStopStep):
    """Consumer step that touches this worker's heartbeat file from its event loop once it consumes."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path: Path | None = None
        self.tref: Any = None
        self.timer: Any = None
        self.ready = False

    def start(self, parent: Any) -> None:
        if os.environ.get("REMAP_SIGTERM") != "SIGQUIT":
            logger.warning(NO_REMAP_WARNING)
        queues = sorted(q.name for q in parent.task_consumer.queues) if parent.task_consumer else []
        # One pool per worker (app.worker_pool refuses more): its queue is its name.
        self.path = heartbeat_path("+".join(queues), os.getpid())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for left in heartbeat_paths(self.path.name.split(".", 1)[0], self.path.parent):
            if _pid_of(left) != os.getpid() and not _pid_alive(_pid_of(left)):
                left.unlink(missing_ok=True)  # a killed worker's: it could not remove it
        self.timer = parent.timer
        # The first start waits for worker_ready (the consumer's loop runs): a file written here appeared before
        # the worker could take a message or stop cleanly. A restart after a lost connection touches at once.
        if self.ready:
            self.beat()

    def beat(self) -> None:
        """Touch the file now and every :data:`INTERVAL` seconds from the worker's timer."""
        self.ready = True
        self._touch()
        if self.tref is None:
            self.tref = self.timer.call_repeatedly(INTERVAL, self._touch)

    def _touch(self) -> None:
        assert self.path is not None
        self.path.write_text(f"{os.getpid()} {time.time():.0f}\n")

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@signals.worker_ready.connect
def _start_beating(sender: Any, **kwargs: Any) -> None:
    # Sent by the consumer just before its loop runs, after the steps started. The first touch goes through the
    # timer, which the loop fires: written here, the file appeared while the consumer could still be stopped
    # half-started (a SIGTERM then left the loop to check a pool the shutdown had already closed, and exit 1).
    for step in getattr(sender, "steps", ()):
        if isinstance(step, Heartbeat):
            step.timer.call_after(0.0, step.beat)


def _pid_of(path: Path) -> int:
    """Return the process id in the name of the heartbeat file ``path`` (0 when it has none)."""
    digits = path.name.rsplit(".", 2)[1]
    return int(digits) if digits.isdigit() else 0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def check(pool_name: str, directory: Path | None = None, max_age: float = MAX_AGE) -> tuple[bool, str]:
    """Return whether a live worker process of ``pool_name`` touched its heartbeat within ``max_age`` seconds."""
    paths = heartbeat_paths(pool_name, directory)
    if not paths:
        return False, f"no heartbeat file of {pool_name!r} in {directory or heartbeat_dir()}"
    reasons = []
    for path in paths:
        pid = _pid_of(path)
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:  # its worker stopped just now
            continue
        if not _pid_alive(pid):
            reasons.append(f"{path} was left by process {pid}, which is gone")
        elif age > max_age:
            reasons.append(f"heartbeat at {path} is {age:.0f}s old (limit {max_age:.0f}s)")
        else:
            return True, f"heartbeat at {path} is {age:.0f}s old"
    return False, "; ".join(reasons) or f"no heartbeat file of {pool_name!r}"


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the named pool's worker is alive, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="POOL", required=True, help="pool name, e.g. images")
    parser.add_argument("--max-age", type=float, default=MAX_AGE)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.config.settings.local")
    import django

    django.setup()
    ok, message = check(args.check, max_age=args.max_age)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
