"""Create the folders the embedded stack writes to, when a process starts (never when settings are imported)."""

from __future__ import annotations

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
