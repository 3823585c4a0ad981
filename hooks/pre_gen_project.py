"""Refuse a project slug that cannot be the project's Python package."""

import keyword
import re
import sys

SLUG = "{{ cookiecutter.project_slug }}"

#: Modules the generated project imports, and its own top-level folders: a package named like one shadows it.
RESERVED = {
    # dependencies
    "amqp", "billiard", "boto3", "botocore", "celery", "click", "config", "django", "environ", "flower",
    "honcho", "kombu", "moto", "packaging", "pil", "pillow", "psycopg", "pytest", "redis", "storages",
    "uvicorn", "vine", "yaml",
    # the project's own folders and modules, and the standard library's test package
    "bench", "conftest", "manage", "scripts", "test", "tests",
}  # fmt: skip


def problem(slug: str) -> str | None:
    """Return why ``slug`` cannot be used, or ``None`` when it can."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", slug):
        return "it must be a lowercase Python identifier: a letter, then letters, digits or underscores"
    if keyword.iskeyword(slug) or keyword.issoftkeyword(slug):
        return "it is a Python keyword"
    if slug in sys.stdlib_module_names or slug in RESERVED:
        return "it clashes with a module of the standard library, a dependency or a folder of the project"
    return None


reason = problem(SLUG)
if reason:
    print(f"ERROR: project_slug {SLUG!r} is not usable: {reason}.", file=sys.stderr)
    sys.exit(1)
