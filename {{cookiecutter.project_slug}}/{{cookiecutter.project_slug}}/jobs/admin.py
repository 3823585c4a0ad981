"""Admin for jobs: who started what, and a link to the status row that tracks it."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord

from .models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Jobs by owner and kind, newest first."""

    list_display = ("id", "owner", "kind", "filename", "created", "status_row")
    list_filter = ("kind",)
    search_fields = ("id", "filename", "owner__username", "task_key")
    readonly_fields = (
        "id",
        "owner",
        "kind",
        "filename",
        "created",
        "task_key",
        "input",
        "status_row",
        "outcome",
        "results_expired_at",
    )
    list_select_related = ("owner",)

    @admin.display(description="status row")
    def status_row(self, job: Job) -> str:
        """Link to the idempotency status row of the job's task, with its status."""
        row = TaskRecord.objects.filter(key=job.task_key).only("pk", "status").first()
        if row is None:
            # Pruned: the job kept its final status.
            return f"{job.outcome['status']} (pruned)" if job.outcome else "-"
        url = reverse("admin:idempotency_taskrecord_change", args=[row.pk])
        return format_html('<a href="{}">{}</a>', url, row.status)

    def has_add_permission(self, request: object) -> bool:
        return False  # jobs start through the API, which writes the status row and publishes the task
