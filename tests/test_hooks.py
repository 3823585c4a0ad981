"""The hooks: values that would bake a broken project are refused by name; good ones bake a project that parses."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from .conftest import TEMPLATE, bake_into

LAST_LINE = "Nothing was generated; run cookiecutter again with other values."


def cookiecutter_cli(output: Path, *values: str, template: str = str(TEMPLATE), cwd: Path | None = None):
    """Run the cookiecutter command line without prompts, as a user would; return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(output), template, *values],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def assert_refused(done: subprocess.CompletedProcess[str], output: Path, *named: str) -> None:
    """Check the bake failed, the hook's message names each of ``named``, and nothing was left behind."""
    assert done.returncode != 0, done.stdout[-2000:]
    for name in named:
        assert name in done.stderr, done.stderr[-2000:]
    # cookiecutter prints its own two lines to stdout; the hook's message is all of stderr, and ends it.
    assert done.stderr.strip().endswith(LAST_LINE), done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr, done.stdout[-2000:] + done.stderr[-2000:]
    assert not any(output.iterdir()), "a refused bake left files behind"


@pytest.mark.parametrize("slug", ["asgiref", "tornado", "sqlparse", "typing_extensions", "django_environ", "yaml"])
def test_a_slug_naming_a_locked_package_is_refused(slug, tmp_path):
    """Each of these is in uv.lock, none a direct dependency (yaml is pyyaml's module): the lock would not parse."""
    done = cookiecutter_cli(tmp_path, f"project_slug={slug}")
    assert_refused(done, tmp_path, f"project_slug {slug!r}", "uv.lock")


def test_the_hook_finds_the_lock_whatever_the_template_path(tmp_path):
    """cookiecutter runs hooks from a temporary copy, from the new project's folder; the template may be ``.``."""
    out = tmp_path / "out"
    out.mkdir()
    done = cookiecutter_cli(out, "project_slug=asgiref", template=".", cwd=TEMPLATE)
    assert_refused(done, out, "project_slug 'asgiref'", "uv.lock")
    done = cookiecutter_cli(out, "project_slug=asgiref", template=os.path.relpath(TEMPLATE, tmp_path), cwd=tmp_path)
    assert_refused(done, out, "project_slug 'asgiref'", "uv.lock")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timezone", "Mars/Olympus"),
        ("timezone", "utc "),
        ("domain_name", "my site.com"),
        ("domain_name", "exa_mple.com"),
        ("domain_name", "-example.com"),
        ("domain_name", 'example.com"'),
        ("email", "nobody"),
        ("email", "no body@example.com"),
        ("email", "someone@my site.com"),
        ("email", 'a"b@example.com'),
        ("project_name", 'Acme "Jobs"'),
        ("project_name", "Acme\\Jobs"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field_and_the_value(field, value, tmp_path):
    # The slug is given so that only ``field`` is wrong.
    done = cookiecutter_cli(tmp_path, f"{field}={value}", "project_slug=acme")
    assert_refused(done, tmp_path, f"{field} {value!r}")


def test_a_refused_project_name_names_the_character(tmp_path):
    done = cookiecutter_cli(tmp_path, 'project_name=Acme "Jobs"', "project_slug=acme")
    assert_refused(done, tmp_path, "contains '\"'")


def test_every_bad_value_is_named_at_once(tmp_path):
    done = cookiecutter_cli(tmp_path, "project_slug=tornado", "timezone=Mars/Olympus", "email=nobody")
    assert_refused(done, tmp_path, "project_slug 'tornado'", "timezone 'Mars/Olympus'", "email 'nobody'")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Acme & Co", "acme_co"),
        ("  Acme -- Jobs!  ", "acme_jobs"),
        ("3D Prints", "project_3d_prints"),
        ("Café Olé", "cafe_ole"),
        ("Acme.Jobs_v2", "acme_jobs_v2"),
    ],
)
def test_the_derived_slug_is_an_identifier(name, slug, tmp_path):
    assert bake_into(tmp_path, project_name=name).name == slug


def test_quotes_and_backslashes_bake_a_project_that_parses(tmp_path):
    """description and author_name are escaped where they are rendered: pyproject.toml parses, every .py compiles."""
    description = 'The "jobs" runner: C:\\temp\\new, \\n not a newline, it\'s {braces} & <tags> "'
    author = 'Ann "The \\ Author" O\'Neil'
    project = bake_into(
        tmp_path,
        project_name="Acme Jobs",
        description=description,
        author_name=author,
        email="ann.o-neil+jobs@mail.example.co.uk",
        domain_name="jobs.example.co.uk",
        timezone="America/Argentina/Buenos_Aires",
    )
    metadata = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert metadata["description"] == description
    assert metadata["authors"] == [{"name": author, "email": "ann.o-neil+jobs@mail.example.co.uk"}]
    sources = [path for path in project.rglob("*.py") if ".venv" not in path.parts]
    assert len(sources) > 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an invalid escape sequence is a SyntaxWarning
        for path in sources:
            compile(path.read_text(), str(path), "exec")
    readme = (project / "README.md").read_text()
    assert description in readme


def test_a_bake_ends_with_the_next_steps(tmp_path):
    done = cookiecutter_cli(tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    project = tmp_path / "proj"
    last = [line for line in done.stdout.splitlines() if line.strip()][-4:]
    assert last[0] == f"Generated {project}. Next steps:", done.stdout[-2000:]
    assert [line.split("#")[0].strip() for line in last[1:]] == [f"cd {project}", "make dev", "make test"]
