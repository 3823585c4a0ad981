"""Create the user that signs in to the jobs page and views the admin locally, printing its password once."""

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandParser

from {{ cookiecutter.project_slug }}.core import rundirs

#: What the demo user may see in the admin: the project's own rows, read-only (no add, change or delete).
VIEW_PERMISSIONS = (("jobs", "view_job"), ("idempotency", "view_taskrecord"))


class Command(BaseCommand):
    """Create a demo user with a random password, or give an existing one a new password."""

    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo", help="user name (default: demo)")
        parser.add_argument("--email", default="demo@example.com", help="address for report-ready e-mails")
        parser.add_argument("--reset", action="store_true", help="set a new password if the user exists")
        parser.add_argument(
            "--hand-over",
            action="store_true",
            help="leave a new password to `manage.py stacksummary` (make dev) instead of printing it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        username = options["username"]
        user = users.objects.filter(username=username).first()
        if user is not None and not options["reset"]:
            allow_admin_views(user)
            self.stdout.write(f"user:      {username} exists (its password was printed once; --reset sets a new one)")
            return
        # Printed once and stored only as a hash: nothing else can show it again.
        password = secrets.token_urlsafe(12)
        if user is None:
            user = users.objects.create_user(username, options["email"], password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        allow_admin_views(user)
        if options["hand_over"]:
            # The summary prints it once the stack answers and deletes the file as it starts (a 0600 file under
            # RUN_DIR for a second or two); printed here, it would scroll away under the workers' start-up.
            rundirs.hand_over(rundirs.DEMO_PASSWORD_FILE, f"{username}\n{password}\n")
            self.stdout.write(f"user:      {username}  password: printed once the stack answers")
            return
        self.stdout.write(f"user:      {username}  password: {password}  (shown once; sign in at /accounts/login/)")


def allow_admin_views(user: Any) -> None:
    """Make ``user`` staff that can view, and only view, the jobs and status rows in the admin."""
    permissions = [Permission.objects.get(content_type__app_label=app, codename=code) for app, code in VIEW_PERMISSIONS]
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.user_permissions.add(*permissions)
