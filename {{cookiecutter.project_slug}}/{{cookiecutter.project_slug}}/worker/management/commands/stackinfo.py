"""Print what the local stack runs on: database, broker, storage, pools and ports."""

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force


class Command(BaseCommand):
    """Print the services and ports of the local stack."""

    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        web = os.environ.get("WEB_PORT", "8000")
        flower = os.environ.get("FLOWER_PORT", "5555")
        db = settings.DATABASES["default"]
        storage = settings.STORAGES["claimcheck"]["BACKEND"].rsplit(".", 1)[-1]
        self.stdout.write(f"database:  {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}")
        self.stdout.write(f"broker:    {settings.CELERY_BROKER_URL.split('@')[-1]}")
        self.stdout.write(f"storage:   {storage}")
        for pool in pools_in_force():
            self.stdout.write(f"pool:      {pool.name:<8} {pool.pool} - {pool.purpose}")
        # Opened now, they would not answer yet: stacksummary prints them (and the demo password) once they do.
        self.stdout.write(f"urls:      web :{web}, Flower :{flower}; printed in full once the stack answers")
