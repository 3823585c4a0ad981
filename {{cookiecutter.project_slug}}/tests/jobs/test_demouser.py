"""`manage.py demouser`: the demo user signs in to the jobs page and can view, only view, the project's admin."""

from __future__ import annotations

import io
import stat

import pytest
from django.core.management import call_command
from django.test import Client

from {{ cookiecutter.project_slug }}.core import rundirs
from {{ cookiecutter.project_slug }}.idempotency.models import Status, TaskRecord

pytestmark = pytest.mark.django_db


def demouser(*args: str) -> str:
    """Run ``manage.py demouser`` with ``args`` and return what it printed."""
    out = io.StringIO()
    call_command("demouser", *args, stdout=out)
    return out.getvalue()


def password_of(printed: str) -> str:
    """Return the password that demouser printed."""
    return printed.split("password: ", 1)[1].split()[0]


def test_the_demo_user_opens_the_admin_and_views_jobs_and_status_rows_only():
    client = Client()
    assert client.login(username="demo", password=password_of(demouser()))
    assert client.get("/admin/").status_code == 200
    for page in ("/admin/jobs/job/", "/admin/idempotency/taskrecord/"):
        assert client.get(page).status_code == 200, page
    # View only: no other app's pages, no adding, no deleting.
    assert client.get("/admin/auth/user/").status_code == 403
    assert client.get("/admin/jobs/job/add/").status_code == 403
    assert b"delete_selected" not in client.get("/admin/jobs/job/").content


def test_a_demo_user_made_before_gets_the_admin_views_with_its_password_unchanged(django_user_model):
    django_user_model.objects.create_user("demo", "demo@example.com", "an-older-password")
    assert "exists" in demouser()
    client = Client()
    assert client.login(username="demo", password="an-older-password")
    assert client.get("/admin/jobs/job/").status_code == 200


def test_hand_over_leaves_the_password_to_the_summary_in_a_private_file(settings, tmp_path):
    settings.RUN_DIR = tmp_path
    printed = demouser("--hand-over")
    path = tmp_path / rundirs.DEMO_PASSWORD_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    username, password = path.read_text().splitlines()
    assert username == "demo"
    assert password not in printed
    assert "printed once the stack answers" in printed
    assert Client().login(username="demo", password=password)
    assert rundirs.take_over(rundirs.DEMO_PASSWORD_FILE) == f"demo\n{password}\n"
    assert not path.exists()


def test_the_demo_user_cannot_retry_failed_tasks_from_the_admin(admin_client):
    failed = TaskRecord.objects.create(
        key="broken", task_name="t", queue="default", payload_hash="-", args=[], kwargs={}, status=Status.FAILED
    )
    changelist = "/admin/idempotency/taskrecord/"
    assert b'value="retry_selected"' in admin_client.get(changelist).content
    client = Client()
    assert client.login(username="demo", password=password_of(demouser()))
    assert b'value="retry_selected"' not in client.get(changelist).content
    client.post(changelist, {"action": "retry_selected", "_selected_action": [str(failed.pk)]})
    assert TaskRecord.objects.get(pk=failed.pk).status == Status.FAILED
