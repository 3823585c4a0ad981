"""The peers' prefill on bench.peer_settings: reads ``SYSTEM FIRST COUNT`` lines, answers ``ok`` once each commits."""

from __future__ import annotations

import sys

import django

#: Each system's task table (django_tasks_db's app label is django_tasks_database).
TABLES = {"db": "django_tasks_database_dbtaskresult", "procrastinate": "procrastinate_jobs"}


def main() -> None:
    """Queue each line's no-op tasks in one transaction, so none is runnable before the commit."""
    django.setup()
    from django.db import connection, transaction

    from . import peer_tasks
    from .harness import analyze

    for line in sys.stdin:
        system, first, count = line.split()
        numbers = range(int(first), int(first) + int(count))
        with transaction.atomic():
            if system == "db":
                for i in numbers:
                    peer_tasks.noop_db.enqueue(i)
            elif system == "procrastinate":
                peer_tasks.noop_procrastinate.batch_defer(*({"i": i} for i in numbers))
            else:
                raise ValueError(f"unknown system {system!r}")
            # In the transaction: the statistics count its rows (ANALYZE samples them) before a worker sees one.
            with connection.cursor() as cursor:
                analyze(cursor, TABLES[system])
        print("ok", flush=True)


if __name__ == "__main__":
    main()
