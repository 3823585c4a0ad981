"""Test settings for make dev's Ctrl-C test: a reports pool whose 7 s soft shutdown outlasts honcho's 5 s kill wait."""

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.config.settings.test import *  # noqa: F403
from {{ cookiecutter.project_slug }}.config.settings.test import WORKER_POOLS

#: Seconds the reports pool's stopping worker lets a running task finish (half its soft time limit).
REPORTS_SOFT_SHUTDOWN = 7
WORKER_POOLS = pools.scaled(WORKER_POOLS, {"reports": (2 * REPORTS_SOFT_SHUTDOWN, 2 * REPORTS_SOFT_SHUTDOWN + 2)})
