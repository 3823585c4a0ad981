"""Admin for jobs: who started what, a link to the status row that tracks it, and the broker's queues per pool."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from {{ cookiecutter.project_slug }}.core.http import ApiError
from {{ cookiecutter.project_slug }}.idempotency.models import TaskRecord
from {{ cookiecutter.project_slug }}.worker.queues import pools_in_force

from .models import Job
from .queues import queue_depths, requeue_dead


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
    change_list_template = "admin/jobs/job/change_list.html"

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

    def get_urls(self) -> list[URLPattern]:
        queues = [
            path("queues/", self.admin_site.admin_view(self.queues_view), name="jobs_queues"),
            path(
                "queues/<str:queue>/requeue-dead/",
                self.admin_site.admin_view(require_POST(self.requeue_dead_view)),
                name="jobs_queues_requeue_dead",
            ),
        ]
        return queues + super().get_urls()

    def queues_view(self, request: HttpRequest) -> HttpResponse:
        """Show per pool what its queue holds: waiting, unacknowledged, dead-lettered (RabbitMQ), owed."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        depths = queue_depths()
        rows: list[dict[str, Any]] = [
            {
                "pool": pool.name,
                "queue": pool.queue,
                **{kind: depths[kind][pool.queue] for kind in ("queues", "unacked", "dead", "owed")},
            }
            for pool in pools_in_force()
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Broker queues",
            "opts": self.model._meta,
            "rows": rows,
            "transport": depths["transport"],
            "error": depths["error"],
            "can_requeue": request.user.is_staff and self.has_change_permission(request),
        }
        return TemplateResponse(request, "admin/jobs/queues.html", context)

    def requeue_dead_view(self, request: HttpRequest, queue: str) -> HttpResponse:
        """Publish the dead-lettered messages of ``queue`` to it again, then show the queues."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        try:
            moved = requeue_dead(queue)
        except ApiError as exc:  # an unknown queue, or a broker without dead-letter queues: say which
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"Requeued {moved} dead-lettered message(s) to {queue}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:jobs_queues"))
