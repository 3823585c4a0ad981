"""URL routes of the claim-check app."""

from django.urls import path

from . import views

app_name = "claimcheck"

urlpatterns = [
    path("uploads/", views.create_upload, name="create-upload"),
    path("uploads/complete/", views.complete_upload, name="complete-upload"),
    path("uploads/receive/", views.receive_upload, name="receive-upload"),
    path("blobs/<str:token>/", views.download, name="download"),
]
