"""Idempotent Celery tasks: a status row per key, claimed by one delivery at a time."""
