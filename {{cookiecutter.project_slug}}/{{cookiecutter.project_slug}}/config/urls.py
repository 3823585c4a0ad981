"""URL routes of the project."""

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def healthz(request: HttpRequest) -> JsonResponse:
    """Answer the orchestrator's liveness probe."""
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("claimcheck/", include("{{ cookiecutter.project_slug }}.claimcheck.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("{{ cookiecutter.project_slug }}.jobs.urls")),
]
