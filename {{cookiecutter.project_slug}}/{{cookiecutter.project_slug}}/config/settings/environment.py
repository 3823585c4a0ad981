"""The environment (``.env`` included) and the values every settings module derives from."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parents[3]
env = environ.Env()
env.read_env(BASE_DIR / ".env", overwrite=False)

# Everything the embedded stack writes lives under RUN_DIR; {{ cookiecutter.project_slug }}.core.rundirs creates its folders
# when a process starts, never at import.
RUN_DIR = Path(env.str("RUN_DIR", default=str(BASE_DIR / "run")))
TIME_ZONE = "{{ cookiecutter.timezone }}"
