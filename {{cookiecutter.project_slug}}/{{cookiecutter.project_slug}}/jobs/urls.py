"""URL routes of the jobs API and page."""

from django.urls import path

from . import views

app_name = "jobs"

urlpatterns = [
    path("", views.index, name="index"),
    path("api/uploads", views.upload_create, name="uploads"),
    path("api/jobs", views.jobs, name="jobs"),
    path("api/jobs/<str:job_id>", views.job, name="job"),
    path("api/jobs/<str:job_id>/events", views.job_events, name="events"),
    path("api/jobs/<str:job_id>/cancel", views.job_cancel, name="cancel"),
    path("api/queues", views.queues, name="queues"),
    path("api/queues/owed", views.queues_owed, name="queues-owed"),
    path("api/queues/<str:queue>/requeue-dead", views.queue_requeue_dead, name="requeue-dead"),
]
