"""The Makefile: `make` lists the targets, and `make dev` installs only what the stack runs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from support.servers import PROJECT_DIR


def make(*args: str, env: dict[str, str] | None = None) -> str:
    """Run make in the project directory and return its output; fail the test if it fails."""
    done = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"make {args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_make_alone_lists_every_target_with_its_line():
    targets = re.findall(r"^([a-z-]+):", (PROJECT_DIR / "Makefile").read_text(), re.MULTILINE)
    listed = dict(line.split(None, 2)[1:] for line in make().splitlines())
    assert set(targets) - {"uv"} == set(listed), listed
    assert listed["dev"].startswith("Run web (ASGI), one worker per pool"), listed
    assert all(doc.strip() for doc in listed.values()), listed


def test_make_dev_installs_no_dev_tool_and_syncs_nothing_else():
    commands = make("-n", "dev")
    assert "./scripts/sync-stack" in commands
    # Every `uv run` of the stack runs in the environment as installed: a plain `uv run` would sync the dev group.
    runs = [line for line in commands.splitlines() if "uv run" in line]
    assert runs
    assert all("uv run --no-sync " in line for line in runs), runs
    assert "uv sync" not in commands


def test_sync_stack_installs_the_dependencies_and_honcho_only(tmp_path: Path):
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    # A new environment needs a Python >= 3.12; `make` finds one the same way (uv must not download one).
    found = subprocess.run(["./scripts/find-python"], cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    env.setdefault("UV_PYTHON", found.stdout.strip())
    subprocess.run(["./scripts/sync-stack"], cwd=PROJECT_DIR, env=env, check=True, capture_output=True, timeout=600)
    installed = {path.name.split("-")[0].lower() for path in venv.glob("lib/python*/site-packages/*.dist-info")}
    assert {"django", "celery", "kombu", "flower", "uvicorn", "honcho"} <= installed, installed
    assert not installed & {"pytest", "playwright", "mypy", "ruff", "moto"}, installed
