"""Worker runtime: the Celery app and its wiring from the pool registry, liveness, process files."""
