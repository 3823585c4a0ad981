"""Bake the template once per option combination and share the results between tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parent.parent
FIND_PYTHON = TEMPLATE / "{{cookiecutter.project_slug}}" / "scripts" / "find-python"

#: Every supported option combination, by an id for test names: (extra context, expected slug).
COMBINATIONS: dict[str, tuple[dict[str, str], str]] = {
    "default": ({}, "proj"),
    "kubernetes": ({"kubernetes_manifests": "y"}, "proj"),
    # A name with spaces derives the slug; the templated uv.lock must work for it too.
    "acme-jobs": ({"project_name": "Acme Jobs", "kubernetes_manifests": "y"}, "acme_jobs"),
    # A slug sorting after "tests": import order (ruff's isort) must not depend on the slug.
    "zeta": ({"project_slug": "zeta_works"}, "zeta_works"),
    # A team starting real work: no demo app, the jobs API with no kinds registered.
    "no-demo": ({"demo_flows": "n"}, "proj"),
}


@dataclass(frozen=True)
class Baked:
    """A generated project."""

    path: Path
    slug: str
    context: dict[str, str]


def project_env() -> dict[str, str]:
    """Return the environment for commands run in a generated project (its own virtualenv, Python >= 3.12)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    found = subprocess.run([str(FIND_PYTHON)], capture_output=True, text=True, check=False).stdout.strip()
    if found and "UV_PYTHON" not in env:
        env["UV_PYTHON"] = found
    return env


def bake_into(output_dir: Path, **context: str) -> Path:
    """Bake the template with ``context`` into ``output_dir`` without prompts; return the project path."""
    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output_dir), extra_context=context))


@pytest.fixture(scope="session")
def bake(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Baked]:
    """Return a function that bakes a combination by id, once per session."""
    baked: dict[str, Baked] = {}

    def get(combination: str) -> Baked:
        if combination not in baked:
            context, slug = COMBINATIONS[combination]
            path = bake_into(tmp_path_factory.mktemp(f"bake-{combination}"), **context)
            assert path.name == slug
            baked[combination] = Baked(path, slug, context)
        return baked[combination]

    return get


@pytest.fixture(scope="session")
def synced(bake: Callable[[str], Baked]) -> Callable[[str], Baked]:
    """Return a function that bakes a combination and installs it with ``uv sync --locked``, once per session."""
    done: set[str] = set()

    def get(combination: str) -> Baked:
        project = bake(combination)
        if combination not in done:
            result = run(["uv", "sync", "--locked"], project.path)
            assert result.returncode == 0, f"uv sync --locked failed for {project.slug}:\n{result.stderr[-3000:]}"
            done.add(combination)
        return project

    return get


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``cwd`` with the generated project's environment."""
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed", pytrace=False)
    env = project_env()
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
