"""A user's long-running job: who started it, what it works on, and the status row that tracks it."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Job(models.Model):
    """One job a user started; its status, progress and result live in the task's status row until it is pruned."""

    #: Random, so job URLs cannot be guessed or enumerated.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    #: The name of a kind registered in ``jobs.kinds`` by the app that owns it.
    kind = models.CharField(max_length=32)
    #: The file name the user uploaded, shown on the page; the data itself is in claim-check storage.
    filename = models.CharField(max_length=255, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    #: Idempotency key of the task's status row: retrying the start request cannot start a second task.
    task_key = models.CharField(max_length=200, unique=True)
    #: Claim-check reference of the uploaded input (signed; only the reference travels to the worker).
    input = models.JSONField(default=dict, blank=True)
    #: The final state as the API showed it, kept when the status row is pruned (``IDEMPOTENCY_RETENTION``).
    outcome = models.JSONField(null=True, blank=True)
    #: When the status row was pruned: the outcome stays, the result files' links do not.
    results_expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created",)
        indexes = (models.Index(fields=("owner", "-created")),)

    def __str__(self) -> str:
        return f"{self.kind} job {self.id}"
