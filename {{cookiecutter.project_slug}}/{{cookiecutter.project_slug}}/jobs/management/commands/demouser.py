"""Create the user that signs in to the jobs page locally, printing its password once."""

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    """Create a demo user with a random password, or give an existing one a new password."""

    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo", help="user name (default: demo)")
        parser.add_argument("--email", default="demo@example.com", help="address for report-ready e-mails")
        parser.add_argument("--reset", action="store_true", help="set a new password if the user exists")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        username = options["username"]
        user = users.objects.filter(username=username).first()
        if user is not None and not options["reset"]:
            self.stdout.write(f"user:      {username} exists (its password was printed once; --reset sets a new one)")
            return
        # Printed once and stored only as a hash: nothing else can show it again.
        password = secrets.token_urlsafe(12)
        if user is None:
            user = users.objects.create_user(username, options["email"], password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        self.stdout.write(f"user:      {username}  password: {password}  (shown once; sign in at /accounts/login/)")
