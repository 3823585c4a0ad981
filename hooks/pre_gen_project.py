"""Refuse a project slug that cannot be the project's Python package."""

import keyword
import re
import sys

SLUG = "{{ cookiecutter.project_slug }}"

#: Modules the generated project imports; a package of the same name would shadow them.
RESERVED = {
    "amqp", "billiard", "boto3", "botocore", "celery", "config", "django", "environ", "flower",
    "honcho", "kombu", "moto", "packaging", "pillow", "pil", "psycopg", "pytest", "redis",
    "storages", "tests", "uvicorn", "vine", "yaml",
}


def problem(slug: str) -> str | None:
    """Return why ``slug`` cannot be used, or ``None`` when it can."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", slug):
        return "it must be a lowercase Python identifier: a letter, then letters, digits or underscores"
    if keyword.iskeyword(slug):
        return "it is a Python keyword"
    if slug in sys.stdlib_module_names or slug in RESERVED:
        return "it clashes with a module of the standard library or a dependency"
    return None


reason = problem(SLUG)
if reason:
    print(f"ERROR: project_slug {SLUG!r} is not usable: {reason}.", file=sys.stderr)
    sys.exit(1)
