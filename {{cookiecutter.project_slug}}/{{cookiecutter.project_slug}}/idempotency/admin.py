"""Admin for the status rows: filter, read the traceback, retry what failed, cancel what has not finished."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from . import maintenance
from .cancel import cancel
from .exceptions import IdempotencyError
from .models import FINISHED, Status, TaskRecord, WorkerLiveness


@admin.register(TaskRecord)
class TaskRecordAdmin(admin.ModelAdmin):
    """Read-only view of idempotent task calls, with a retry action for failed ones."""

    list_display = ("key", "task_name", "queue", "status", "attempts", "progress", "enqueued_at", "finished_at")
    list_filter = ("status", "queue", "task_name")
    search_fields = ("key", "=id", "=task_id", "error_type")
    date_hierarchy = "enqueued_at"
    actions = ("retry_selected", "cancel_selected")
    fieldsets = (
        (None, {"fields": ("id", "key", "task_name", "queue", "status", "attempts", "payload_hash")}),
        ("Call", {"fields": ("args", "kwargs", "priority", "run_after", "task_id", "owner", "lease_expires_at")}),
        ("Progress and result", {"fields": ("progress", "progress_message", "result")}),
        ("Error", {"fields": ("error_type", "error_message", "traceback")}),
        # One entry per claim and one per failed attempt: what django.tasks reads as worker_ids and errors.
        ("Attempts", {"fields": ("attempt_log", "error_log")}),
        ("Times", {"fields": ("enqueued_at", "published_at", "started_at", "finished_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: TaskRecord | None = None) -> list[str]:
        # Rows are written by workers only; editing one by hand would break the claim protocol.
        return [f.name for f in TaskRecord._meta.fields if f.name != "error_traceback"] + ["traceback"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TaskRecord | None = None) -> bool:
        return False

    @admin.display(description="traceback")
    def traceback(self, obj: TaskRecord) -> str:
        """Show the traceback preformatted, so it reads as the worker printed it."""
        if not obj.error_traceback:
            return "-"
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', obj.error_traceback)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Allow retrying to who may change status rows: it publishes tasks again, more than viewing."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(description="Retry selected failed tasks", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[TaskRecord]) -> None:
        """Reset the selected failed rows (attempts back to 0) and publish them again."""
        failed = list(queryset.filter(status=Status.FAILED))
        skipped = queryset.count() - len(failed)
        retried = maintenance.retry_failed(failed)
        self.message_user(request, f"Retrying {len(retried)} failed task(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Skipped {skipped} task(s) that had not failed.", messages.WARNING)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Allow cancelling to who may change status rows, as retrying."""
        return self.has_retry_permission(request)

    @admin.action(description="Cancel selected pending or running tasks", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[TaskRecord]) -> None:
        """Cancel the selected rows that are not final: pending ones never run, running ones are stopped."""
        cancelled = 0
        for key in queryset.exclude(status__in=FINISHED).values_list("key", flat=True):
            try:
                cancel(key)
            except IdempotencyError:
                continue  # it finished (or was pruned) since the list was shown
            cancelled += 1
        skipped = queryset.count() - cancelled
        self.message_user(request, f"Cancelled {cancelled} task(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Skipped {skipped} task(s) that were final already.", messages.WARNING)


@admin.register(WorkerLiveness)
class WorkerLivenessAdmin(admin.ModelAdmin):
    """Read-only view of the worker nodes proving they are alive: a lapsed one's running rows are reclaimed."""

    list_display = ("node", "pid", "started_at", "alive_until")
    search_fields = ("node",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WorkerLiveness | None = None) -> bool:
        return False
