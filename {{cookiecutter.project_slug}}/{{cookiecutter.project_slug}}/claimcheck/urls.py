"""URL routes of the claim check's local-disk endpoints (S3 serves both itself through presigned URLs)."""

from django.urls import path

from . import views

app_name = "claimcheck"

urlpatterns = [
    path("uploads/receive/", views.receive_upload, name="receive-upload"),
    path("blobs/<str:token>/", views.download, name="download"),
]
