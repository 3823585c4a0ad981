"""The embedded stack's RUN_DIR: its folders (created when a process starts, never at import), hand-over files."""

from __future__ import annotations

import os
from pathlib import Path


def make_run_dirs() -> list[Path]:
    """Create the folders that SQLite, the filesystem broker, file results and beat's schedule need; return them.

    Called by ``manage.py``, the ASGI and WSGI entry points and the Celery app once it is configured,
    so a process that only imports the settings (a type checker, a linter) writes nothing.
    """
    from django.conf import settings

    folders: list[Path] = []
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        folders.append(Path(database["NAME"]).parent)
    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        folders += [Path(options[name]) for name in ("data_folder_in", "data_folder_out", "control_folder")]
    if settings.CELERY_RESULT_BACKEND.startswith("file://"):
        folders.append(Path(settings.CELERY_RESULT_BACKEND.removeprefix("file://")))
    folders.append(Path(settings.CELERY_BEAT_SCHEDULE_FILENAME).parent)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


#: The demo user's new password, from ``manage.py demouser --hand-over`` to ``manage.py stacksummary`` (README).
DEMO_PASSWORD_FILE = "demo-password"  # noqa: S105 - the name of the file, not a password


def hand_over(name: str, text: str) -> Path:
    """Write ``text`` to the file ``name`` under RUN_DIR, readable by this user only, for one reader to take."""
    from django.conf import settings

    path = Path(settings.RUN_DIR) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    # Created 0600 from the start (O_EXCL: never through a file someone else put there), not chmod-ed later.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return path


def take_over(name: str) -> str | None:
    """Return the text of the file ``name`` under RUN_DIR and delete the file; ``None`` if there is none."""
    from django.conf import settings

    path = Path(settings.RUN_DIR) / name
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return text
