"""URL routes of the project."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path


def healthz(request: HttpRequest) -> JsonResponse:
    """Answer the orchestrator's liveness probe."""
    return JsonResponse({"status": "ok"})


def favicon(request: HttpRequest) -> HttpResponse:
    """Answer the browser's /favicon.ico with no icon, instead of a 404 logged on every admin page."""
    response = HttpResponse(status=204)
    response["Cache-Control"] = "public, max-age=86400"
    return response


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("favicon.ico", favicon, name="favicon"),
    path("claimcheck/", include("{{ cookiecutter.project_slug }}.claimcheck.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("{{ cookiecutter.project_slug }}.jobs.urls")),
]
