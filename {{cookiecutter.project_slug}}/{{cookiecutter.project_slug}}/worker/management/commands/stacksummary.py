"""Wait until the local stack answers, then print where to go, the demo user's password, and how to stop."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from {{ cookiecutter.project_slug }}.core import rundirs
from {{ cookiecutter.project_slug }}.worker import heartbeat
from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force

RULE = "-" * 78


def answers(url: str) -> bool:
    """Return whether a GET of ``url`` (a loopback address of the stack) answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - http on loopback, built here
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def worker_alive(pool_name: str) -> bool:
    """Return whether the worker of ``pool_name`` touches its heartbeat file."""
    return heartbeat.check(pool_name)[0]


class Command(BaseCommand):
    """Print the stack's addresses once web, Flower and every worker answer; then stay until the stack stops."""

    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the stack (default 300)")
        parser.add_argument(
            "--exit", action="store_true", help="exit after printing (under honcho, an exit stops the whole stack)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["timeout"] < 0:
            raise CommandError(f"--timeout must be 0 or more seconds, got {options['timeout']}")
        # Taken (and the file deleted) before waiting: the password is on disk only until this process starts.
        handed = rundirs.take_over(rundirs.DEMO_PASSWORD_FILE)
        web = f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8000')}/"
        flower = f"http://127.0.0.1:{os.environ.get('FLOWER_PORT', '5555')}/"
        checks: dict[str, Callable[[], bool]] = {
            "web": partial(answers, f"{web}healthz"),
            "flower": partial(answers, f"{flower}healthcheck"),
            **{f"worker {p.name}": partial(worker_alive, p.name) for p in pools_in_force()},
        }
        started = time.monotonic()
        waiting = list(checks)
        while True:
            waiting = [name for name in waiting if not checks[name]()]
            if not waiting or time.monotonic() - started >= options["timeout"]:
                break
            time.sleep(0.5)
        self.stdout.write(self.summary(web, flower, handed, waiting, time.monotonic() - started))
        if options["exit"]:
            return
        # honcho stops every process when one exits: stay, idle, until it stops the stack.
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            return

    def summary(self, web: str, flower: str, handed: str | None, waiting: list[str], seconds: float) -> str:
        """Return the block to print: what answers, the addresses, the demo user, how to stop."""
        if waiting:
            state = f"Not answering after {seconds:.0f} s: {', '.join(waiting)} (see the lines above)."
        else:
            state = f"The stack answers (web, Flower, {len(pools_in_force())} workers)."
        if handed:
            username, password = handed.split("\n")[:2]
            user = f"{username}  password: {password}  (shown this once; stored only as a hash)"
        else:
            user = "demo  (its password was printed when it was created; `manage.py demouser --reset` sets a new one)"
        return "\n".join(
            [
                RULE,
                state,
                f"web:     {web}",
                f"admin:   {web}admin/  (the demo user views jobs and status rows; createsuperuser for more)",
                f"user:    {user}",
                f"flower:  {flower}  (user {settings.FLOWER_USER or '?'}, password FLOWER_PASSWORD in .env)",
                "stop:    Ctrl+C, best while the workers are idle (README.md, 'What happens when you deploy')",
                RULE,
            ]
        )
