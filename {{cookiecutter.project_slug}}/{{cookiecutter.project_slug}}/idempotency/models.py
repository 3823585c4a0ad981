"""The status row: one per idempotency key, recording claims, progress and the outcome of a task."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from .payload import KEY_MAX_LENGTH, CeleryJSONDecoder, CeleryJSONEncoder


class Status(models.TextChoices):
    """Where a task stands."""

    #: Enqueued, or released after a failed attempt and waiting for its retry.
    PENDING = "pending", "Pending"
    #: Claimed by one delivery, whose lease has not expired (or it died and the reaper has not run yet).
    RUNNING = "running", "Running"
    #: Finished; the stored result is returned to every later delivery.
    SUCCEEDED = "succeeded", "Succeeded"
    #: Failed for good: a permanent error, or the last of the allowed attempts failed.
    FAILED = "failed", "Failed"
    #: Stopped on request (``idempotency.cancel``): a pending row never runs, a running one's outcome is discarded.
    CANCELLED = "cancelled", "Cancelled"


#: Statuses no delivery changes any more.
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class TaskRecord(models.Model):
    """One idempotent task call: its key, payload, claims, progress and outcome."""

    #: Also the Celery task id when the row was created by ``enqueue``.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    #: Unique by the constraint below, not ``unique=True``, which on PostgreSQL adds a second (LIKE) index.
    key = models.CharField(max_length=KEY_MAX_LENGTH)
    task_name = models.CharField(max_length=200)
    queue = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    #: sha256 of the canonical JSON of task name, args and kwargs; a different payload under the same key is refused.
    payload_hash = models.CharField(max_length=64)
    #: The call's arguments, so the reaper and the admin can publish it again.
    args = models.JSONField(default=list, encoder=CeleryJSONEncoder, decoder=CeleryJSONDecoder)
    kwargs = models.JSONField(default=dict, encoder=CeleryJSONEncoder, decoder=CeleryJSONDecoder)
    #: Deliveries that claimed the row, counted at the claim (a delivery that died still counts).
    attempts = models.PositiveIntegerField(default=0)
    #: Celery task id of the delivery that claimed the row last.
    task_id = models.CharField(max_length=255, blank=True)
    #: The claiming delivery: worker node, process id and a token unique to the delivery.
    owner = models.CharField(max_length=255, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    #: Fraction done, 0.0 to 1.0, as last reported by the task.
    progress = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=255, blank=True)
    result = models.JSONField(null=True, blank=True, encoder=CeleryJSONEncoder, decoder=CeleryJSONDecoder)
    error_type = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    error_traceback = models.TextField(blank=True)
    #: One entry per claim, oldest first: ``{"worker": "<node>:<pid>", "started_at": <ISO time>}``, appended by the
    #: claim's own statement, so a delivery that dies right after it still counts (``django.tasks``' worker_ids).
    attempt_log = models.JSONField(default=list, blank=True)
    #: One entry per failed attempt, oldest first: ``{"type": <exception class path>, "traceback": <text>}``.
    error_log = models.JSONField(default=list, blank=True)
    #: ``django.tasks`` priority (-100 to 100) of a call made through that API; ``None``: the broker's default.
    priority = models.SmallIntegerField(null=True, blank=True)
    #: Not before this time (``django.tasks``' ``run_after``): the row is published by the recovery pass once due.
    run_after = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(default=timezone.now)
    #: When the call's message was last sent (a retry's: when it falls due); the recovery pass compares it
    #: with the other rows of the queue to tell a queued call from one whose message was lost.
    published_at = models.DateTimeField(null=True, blank=True)
    #: When the latest attempt was claimed.
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-enqueued_at"]
        constraints = [models.UniqueConstraint(fields=["key"], name="idempotency_key_unique")]
        # Each task's claim and success change the status, so neither update is HOT: every index whose condition
        # the new row meets gets an entry. Partial indexes hold only the rows their queries look for (the
        # reaper's running rows, the recovery pass's pending ones, the pruner's finished ones), which saves
        # each task about half of its index writes; the queries name the same condition, so they use them.
        indexes = [
            models.Index(fields=["lease_expires_at"], name="idempotency_lease_idx", condition=Q(status=Status.RUNNING)),
            models.Index(fields=["finished_at"], name="idempotency_finished_idx", condition=Q(status__in=FINISHED)),
            models.Index(
                fields=["queue", "published_at"], name="idempotency_published_idx", condition=Q(status=Status.PENDING)
            ),
            models.Index(fields=["queue", "started_at"], name="idempotency_started_idx"),
            models.Index(
                fields=["run_after"],
                name="idempotency_run_after_idx",
                condition=Q(status=Status.PENDING, run_after__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class WorkerLiveness(models.Model):
    """A worker node's proof that it is alive, renewed every few seconds from its main process.

    A running row whose owner's node (the first part of ``node:pid:token``) stopped renewing it is
    reclaimable by any other worker, on any host, long before the row's lease expires.
    """

    #: The Celery node name (``default@host``), as in the owner of the rows it claims.
    node = models.CharField(max_length=255, unique=True)
    #: The worker's main process.
    pid = models.PositiveIntegerField()
    #: When this incarnation of the node started: rows it claimed earlier belong to a dead predecessor.
    started_at = models.DateTimeField()
    alive_until = models.DateTimeField()

    class Meta:
        # Django's default plural appends an "s": the admin listed "Worker livenesss".
        verbose_name = "worker liveness"
        verbose_name_plural = "worker liveness"

    def __str__(self) -> str:
        return f"{self.node} (pid {self.pid}, alive until {self.alive_until.isoformat()})"
