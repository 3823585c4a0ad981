"""Settings for the peers scenario: bench.settings plus django-tasks-db and procrastinate on the same database."""

from .settings import *  # noqa: F403
from .settings import INSTALLED_APPS, TASKS

INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db", "procrastinate.contrib.django"]
# A second alias: the project's default backend (the idempotent pool backend) stays as it is.
TASKS = {
    **TASKS,
    "db": {"BACKEND": "django_tasks_db.DatabaseBackend"},
}
PROCRASTINATE_IMPORT_PATHS = ["bench.peer_tasks"]
# Only the bench's task module: the apps' tasks modules hold Celery tasks procrastinate has no use for.
PROCRASTINATE_AUTODISCOVER_MODULE_NAME = ""
