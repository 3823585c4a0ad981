"""A heartbeat file each worker refreshes, and the cheap liveness check that reads it.

``celery inspect ping`` costs seconds of CPU and fails while the broker is down; a file that the
worker's own event loop touches every few seconds tells an orchestrator what it needs to know.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from celery import bootsteps
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


def heartbeat_path(pool_name: str, directory: Path | None = None) -> Path:
    """Return the heartbeat file of the worker of ``pool_name`` on this host."""
    return (directory or heartbeat_dir()) / f"{pool_name}.alive"


class Heartbeat(bootsteps.StartStopStep):
    """Consumer step that touches the heartbeat file from the worker's event loop."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path: Path | None = None
        self.tref: Any = None

    def start(self, parent: Any) -> None:
        if os.environ.get("REMAP_SIGTERM") != "SIGQUIT":
            logger.warning(NO_REMAP_WARNING)
        queues = sorted(q.name for q in parent.task_consumer.queues) if parent.task_consumer else []
        self.path = heartbeat_path("+".join(queues) or "all")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._touch()
        self.tref = parent.timer.call_repeatedly(INTERVAL, self._touch)

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


def check(pool_name: str, directory: Path | None = None, max_age: float = MAX_AGE) -> tuple[bool, str]:
    """Return whether the worker of ``pool_name`` touched its heartbeat within ``max_age`` seconds."""
    path = heartbeat_path(pool_name, directory)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"no heartbeat file at {path}"
    if age > max_age:
        return False, f"heartbeat at {path} is {age:.0f}s old (limit {max_age:.0f}s)"
    return True, f"heartbeat at {path} is {age:.0f}s old"


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
