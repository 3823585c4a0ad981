"""Refuse values that would bake a broken project, naming each one and why, before any file is written."""

from __future__ import annotations

import keyword
import re
import sys
import zoneinfo
from pathlib import Path

# Jinja renders each value as a JSON string, a valid Python literal: a quote or a backslash cannot break this file.
VALUES = {
    "project_name": {{ cookiecutter.project_name | tojson }},  # noqa: F821
    "project_slug": {{ cookiecutter.project_slug | tojson }},  # noqa: F821
    "email": {{ cookiecutter.email | tojson }},  # noqa: F821
    "domain_name": {{ cookiecutter.domain_name | tojson }},  # noqa: F821
    "timezone": {{ cookiecutter.timezone | tojson }},  # noqa: F821
}  # fmt: skip
#: The project template's uv.lock: local_extensions.py gives its path, as cookiecutter runs this file from a copy.
LOCK = Path({{ template_lock | tojson }})  # noqa: F821  # fmt: skip

#: Top-level import names of locked packages where they differ from the package's name: uv.lock records
#: only package names, and this hook cannot import the packages to ask. An approximation, kept by hand.
IMPORT_NAMES = {
    "antlr4", "attr", "cfnlint", "dateutil", "dotenv", "environ", "graphql", "importlinter", "markdown_it",
    "pil", "pythoncom", "pywintypes", "rpds", "storages", "win32", "win32api", "win32com", "yaml",
}  # fmt: skip
#: The generated project's own top-level folders and modules, and the standard library's test package.
PROJECT_NAMES = {"bench", "config", "conftest", "manage", "scripts", "support", "test", "tests"}

DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_NAME = rf"{DNS_LABEL}(?:\.{DNS_LABEL})*"


def locked_modules() -> set[str]:
    """Return the names of the packages in the template's uv.lock, as a module would spell them."""
    text = LOCK.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python < 3.11 running cookiecutter: uv.lock writes `name = "..."` under each [[package]]
        names = re.findall(r'^\[\[package\]\]\nname = "([^"]+)"', text, flags=re.MULTILINE)
    else:
        names = [package["name"] for package in tomllib.loads(text)["package"]]
    # PEP 503 normalisation, with "_" as the separator a module name would use; skip the project itself.
    return {re.sub(r"[-_.]+", "_", name).lower() for name in names if "{" not in name}


def slug_problem(slug: str) -> str | None:
    """Return why ``slug`` cannot be the project's package, or ``None`` when it can."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", slug):
        return "it must be a lowercase Python identifier: a letter, then letters, digits or underscores"
    if keyword.iskeyword(slug) or keyword.issoftkeyword(slug):
        return "it is a Python keyword"
    if slug in getattr(sys, "stdlib_module_names", ()):
        return "it is a module of the standard library, which the package would shadow"
    if slug in locked_modules() or slug in IMPORT_NAMES:
        return "it is the name of a package in the project's uv.lock (a dependency, direct or not)"
    if slug in PROJECT_NAMES:
        return "it is a top-level folder or module of the generated project"
    return None


def name_problem(name: str) -> str | None:
    """Return why ``name`` cannot be the project's name, or ``None`` when it can."""
    if not name.strip():
        return "it is empty"
    for char in ('"', "\\"):
        if char in name:
            return f"it contains {char!r}, which the generated package's docstring cannot hold; leave it out"
    return None


def email_problem(email: str) -> str | None:
    """Return why ``email`` cannot be the author's address, or ``None`` when it can."""
    local, at, domain = email.rpartition("@")
    if not at or not re.fullmatch(r'[^@\s"\\]+', local) or not re.fullmatch(DNS_NAME, domain, flags=re.IGNORECASE):
        return "it must be an address like name@example.com (no spaces, quotes or backslashes)"
    return None


def domain_problem(domain: str) -> str | None:
    """Return why ``domain`` is not a DNS name, or ``None`` when it is."""
    if len(domain) > 253 or not re.fullmatch(DNS_NAME, domain, flags=re.IGNORECASE):
        return "it must be a DNS name like example.com: letters, digits and hyphens in dot-separated labels"
    return None


def timezone_problem(zone: str) -> str | None:
    """Return why ``zone`` is not an IANA time zone, or ``None`` when it is."""
    zones = zoneinfo.available_timezones()
    if zones and zone not in zones:  # no time zone data at all (Windows without tzdata): let Django judge
        return "it is not an IANA time zone name like UTC or Europe/Paris"
    return None


CHECKS = {
    "project_name": name_problem,
    "project_slug": slug_problem,
    "email": email_problem,
    "domain_name": domain_problem,
    "timezone": timezone_problem,
}


def problems() -> list[str]:
    """Return a message for each value that cannot be baked."""
    found = []
    for field, check in CHECKS.items():
        reason = check(VALUES[field])
        if reason:
            found.append(f"ERROR: {field} {VALUES[field]!r} is not usable: {reason}.")
    return found


found = problems()
if found:
    print("\n".join([*found, "Nothing was generated; run cookiecutter again with other values."]), file=sys.stderr)
    sys.exit(1)
