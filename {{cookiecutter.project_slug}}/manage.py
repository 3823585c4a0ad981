#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ cookiecutter.project_slug }}.config.settings.local")
    from django.core.management import execute_from_command_line

    from {{ cookiecutter.project_slug }}.core.rundirs import make_run_dirs

    make_run_dirs()  # SQLite and the embedded broker need their folders before the first command opens them
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
