"""Render the process files (Procfile, compose.yaml) from the worker-pool registry.

Run ``python -m {{ cookiecutter.project_slug }}.procfiles`` after editing ``pools.py``; a test fails while
the files on disk and the registry disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:  # run as a module of the package, or loaded by path from the bake hook
    from . import pools
except ImportError:  # pragma: no cover - the post-generation hook loads this file by path
    import pools  # type: ignore[no-redef]

PACKAGE = "{{ cookiecutter.project_slug }}"
PROJECT_DIR = Path(__file__).resolve().parent.parent
HEADER = f"# Generated from {PACKAGE}/pools.py by `python -m {PACKAGE}.procfiles`; edit the registry, not this file.\n"


def worker_command(pool: pools.Pool) -> list[str]:
    """Return the argv that starts ``pool``'s worker, with every pool option spelled out."""
    argv = ["celery", "-A", PACKAGE, "worker", *pool.worker_args(), "-P", pool.pool]
    if pool.concurrency is not None:
        argv += ["-c", str(pool.concurrency)]
    argv += ["--prefetch-multiplier", str(pool.prefetch_multiplier)]
    if pool.pool == "prefork":
        argv += ["--soft-time-limit", str(pool.soft_time_limit), "--time-limit", str(pool.time_limit)]
        if pool.max_tasks_per_child is not None:
            argv += ["--max-tasks-per-child", str(pool.max_tasks_per_child)]
    return [*argv, "-l", "INFO"]


def render_procfile(registry: tuple[pools.Pool, ...] = pools.POOLS) -> str:
    """Return the Procfile that ``make dev`` runs with honcho."""
    lines = [
        HEADER.rstrip("\n"),
        f"web: uvicorn {PACKAGE}.asgi:application --host 127.0.0.1 --port " + "${WEB_PORT:-8000}",
    ]
    lines += [f"worker_{p.name}: {' '.join(worker_command(p))}" for p in registry]
    lines += [
        f"beat: celery -A {PACKAGE} beat -l INFO",
        f"flower: celery -A {PACKAGE} flower --conf={PACKAGE}/flowerconfig.py "
        "--address=127.0.0.1 --port=${FLOWER_PORT:-5555}",
    ]
    return "\n".join(lines) + "\n"


def compose_document(registry: tuple[pools.Pool, ...] = pools.POOLS) -> dict[str, Any]:
    """Return the compose file as data: stateful services, web, one worker per pool, beat, Flower."""
    app_env = {
        "DJANGO_SETTINGS_MODULE": f"{PACKAGE}.settings.production",
        "DATABASE_URL": "postgres://app:app@postgres:5432/app",
        "CELERY_BROKER_URL": "redis://redis:6379/0",
        "AWS_STORAGE_BUCKET_NAME": "claimcheck",
        "AWS_S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_S3_PUBLIC_ENDPOINT_URL": "http://localhost:9000",
        "AWS_ACCESS_KEY_ID": "${MINIO_ROOT_USER:?set MINIO_ROOT_USER in .env}",
        "AWS_SECRET_ACCESS_KEY": "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in .env}",
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,web",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
    }
    depends = {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "createbucket": {"condition": "service_completed_successfully"},
    }
    app: dict[str, Any] = {"build": ".", "env_file": [".env"], "environment": app_env, "depends_on": depends}
    services: dict[str, Any] = {
        "postgres": {
            "image": "postgres:17",
            "environment": {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "app", "POSTGRES_DB": "app"},
            "volumes": ["pgdata:/var/lib/postgresql/data"],
            "healthcheck": {"test": ["CMD", "pg_isready", "-U", "app"], "interval": "5s", "retries": 10},
        },
        "redis": {
            "image": "redis:7",
            # Persist the queue: a restarted broker must not forget waiting tasks.
            "command": ["redis-server", "--appendonly", "yes"],
            "volumes": ["redisdata:/data"],
            "healthcheck": {"test": ["CMD", "redis-cli", "ping"], "interval": "5s", "retries": 10},
        },
        "minio": {
            "image": "minio/minio:latest",
            "command": ["server", "/data", "--console-address", ":9001"],
            "env_file": [".env"],
            "ports": ["9000:9000"],
            "volumes": ["s3data:/data"],
            "healthcheck": {"test": ["CMD", "mc", "ready", "local"], "interval": "5s", "retries": 10},
        },
        "createbucket": {
            "image": "minio/mc:latest",
            "env_file": [".env"],
            "depends_on": {"minio": {"condition": "service_healthy"}},
            "entrypoint": [
                "sh",
                "-c",
                'mc alias set s3 http://minio:9000 "$$MINIO_ROOT_USER" "$$MINIO_ROOT_PASSWORD"'
                " && mc mb --ignore-existing s3/claimcheck",
            ],
        },
        "migrate": {**app, "command": ["python", "manage.py", "migrate", "--noinput"], "restart": "no"},
        "web": {
            **app,
            "command": ["uvicorn", f"{PACKAGE}.asgi:application", "--host", "0.0.0.0", "--port", "8000"],  # noqa: S104
            "ports": ["8000:8000"],
            "depends_on": {**depends, "migrate": {"condition": "service_completed_successfully"}},
        },
    }
    for p in registry:
        services[f"worker-{p.name}"] = {
            **app,
            "command": worker_command(p),
            "stop_grace_period": f"{pools.stop_grace_period(p)}s",
            "environment": {**app_env, "REMAP_SIGTERM": "SIGQUIT"},
            "healthcheck": {
                "test": ["CMD", "python", "-m", f"{PACKAGE}.heartbeat", "--check", p.name],
                "interval": "30s",
                "retries": 3,
            },
        }
    schedule = "/app/run/celerybeat-schedule"
    services["beat"] = {**app, "command": ["celery", "-A", PACKAGE, "beat", "-l", "INFO", "-s", schedule]}
    services["flower"] = {
        **app,
        "command": ["celery", "-A", PACKAGE, "flower", f"--conf={PACKAGE}/flowerconfig.py", "--port=5555"],
        "ports": ["5555:5555"],
    }
    return {"services": services, "volumes": {"pgdata": {}, "redisdata": {}, "s3data": {}}}


def render_compose(registry: tuple[pools.Pool, ...] = pools.POOLS) -> str:
    """Return compose.yaml text."""
    import yaml

    return HEADER + yaml.safe_dump(compose_document(registry), sort_keys=False, width=120)


def render_all(registry: tuple[pools.Pool, ...] = pools.POOLS) -> dict[str, str]:
    """Return every generated process file by its path relative to the project root."""
    return {"Procfile": render_procfile(registry), "compose.yaml": render_compose(registry)}


def write_all(project_dir: Path = PROJECT_DIR) -> list[str]:
    """Write the process files under ``project_dir`` and return their names."""
    files = render_all()
    for name, text in files.items():
        (project_dir / name).write_text(text)
    return sorted(files)


if __name__ == "__main__":
    print("wrote", ", ".join(write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else PROJECT_DIR)))
