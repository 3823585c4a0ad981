"""Render the process files (Procfile, compose.yaml, Kubernetes manifests) from the worker-pool registry.

Run ``python -m {{ cookiecutter.project_slug }}.worker.procfiles`` (or ``make procfiles``) after editing ``pools.py``;
a test fails while the files on disk and the registry disagree.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from {{ cookiecutter.project_slug }} import pools
else:
    try:  # run as a module of the package, or loaded by path from the bake hook (which has no Django or Celery)
        from {{ cookiecutter.project_slug }} import pools
    except ImportError:  # pragma: no cover - the post-generation hook puts the package folder on sys.path
        import pools

PACKAGE = "{{ cookiecutter.project_slug }}"
PROJECT_DIR = Path(__file__).resolve().parents[2]
#: Whether the project was generated with Kubernetes manifests (the ``kubernetes_manifests`` option).
KUBERNETES_MANIFESTS = {{ "True" if cookiecutter.kubernetes_manifests == "y" else "False" }}
HEADER = f"# Generated from {PACKAGE}/pools.py by `make procfiles`; edit the registry, not this file.\n"
#: The image compose builds and the Kubernetes manifests run.
IMAGE = f"{PACKAGE}:latest"
#: Where the image's writable run directory (heartbeat files, beat schedule) lives.
CONTAINER_RUN_DIR = "/app/run"
#: Lists of scalars that fit in this many characters are written on one line: ``[CMD, redis-cli, ping]``.
FLOW_LIST_WIDTH = 100
#: The web service's port inside the cluster, where KEDA asks what each pool owes.
WEB_PORT = 8000
#: Seconds between two of KEDA's questions, and how long a pool stays idle before it scales to its minimum.
KEDA_POLLING_INTERVAL = 15
KEDA_COOLDOWN_PERIOD = 300


def rabbitmq_conf(registry: tuple[pools.Pool, ...] = pools.POOLS) -> str:
    """Return the ``rabbitmq.conf`` lines the registry needs: a consumer timeout above every lease."""
    return f"consumer_timeout = {pools.consumer_timeout(registry) * 1000}\n"


def worker_command(pool: pools.Pool) -> list[str]:
    """Return the argv that starts ``pool``'s worker, with every pool option spelled out."""
    argv = ["celery", "-A", PACKAGE, "worker", *pool.worker_args(), "-P", pool.pool]
    if pool.concurrency is not None:
        argv += ["-c", str(pool.concurrency)]
    argv += ["--prefetch-multiplier", str(pool.prefetch_multiplier)]
    # The project's threads pool enforces time limits too ({{ cookiecutter.project_slug }}.worker.threadpool).
    argv += ["--soft-time-limit", str(pool.soft_time_limit), "--time-limit", str(pool.time_limit)]
    if pool.pool == "prefork":
        if pool.max_tasks_per_child is not None:
            argv += ["--max-tasks-per-child", str(pool.max_tasks_per_child)]
        if pool.max_memory_per_child is not None:
            argv += ["--max-memory-per-child", str(pool.max_memory_per_child)]
    return [*argv, "-l", "INFO"]


def heartbeat_command(pool: pools.Pool) -> list[str]:
    """Return the argv of the liveness check of ``pool``'s worker."""
    return ["python", "-m", f"{PACKAGE}.worker.heartbeat", "--check", pool.name]


def beat_command(schedule: str | None = None) -> list[str]:
    """Return the argv that starts celery beat."""
    return ["celery", "-A", PACKAGE, "beat", "-l", "INFO", *(["-s", schedule] if schedule else [])]


def flower_command(*options: str) -> list[str]:
    """Return the argv that starts Flower with the project's configuration (basic auth)."""
    return ["celery", "-A", PACKAGE, "flower", f"--conf={PACKAGE}/worker/flowerconfig.py", *options]


def web_command(host: str, port: str) -> list[str]:
    """Return the argv that starts the ASGI web server."""
    # Django's ASGI handler does not speak the lifespan protocol; "auto" logs that as if something were wrong.
    return ["uvicorn", f"{PACKAGE}.config.asgi:application", "--host", host, "--port", port, "--lifespan", "off"]


def shell_line(argv: list[str]) -> str:
    """Return ``argv`` as one command line, for the Procfile and compose's ``command:``."""
    # ``${WEB_PORT:-8000}`` is left for the shell to expand; everything else is quoted as needed.
    return " ".join(arg if "${" in arg else shlex.quote(arg) for arg in argv)


def render_procfile(registry: tuple[pools.Pool, ...] = pools.POOLS) -> str:
    """Return the Procfile that ``make dev`` runs with honcho ({{ cookiecutter.project_slug }}.worker.devstack)."""
    processes = [
        ("web", web_command("127.0.0.1", "${WEB_PORT:-8000}")),
        *((f"worker_{p.name}", worker_command(p)) for p in registry),
        ("beat", beat_command()),
        ("flower", flower_command("--address=127.0.0.1", "--port=${FLOWER_PORT:-5555}")),
        # Prints the addresses and the demo user's password once everything answers, after the start-up logs.
        ("summary", ["python", "manage.py", "stacksummary"]),
    ]
    # `exec`: the runner's SIGTERM must reach the worker's main process, not a shell that dies without passing it on.
    lines = [HEADER.rstrip("\n"), *(f"{name}: exec {shell_line(argv)}" for name, argv in processes)]
    return "\n".join(lines) + "\n"


def compose_document(registry: tuple[pools.Pool, ...] = pools.POOLS) -> dict[str, Any]:
    """Return the compose file as data: stateful services, web, one worker per pool, beat, Flower."""
    app_env = {
        "DJANGO_SETTINGS_MODULE": f"{PACKAGE}.config.settings.production",
        "DATABASE_URL": "postgres://app:app@postgres:5432/app",
        # Redis unless .env says otherwise: CELERY_BROKER_URL=amqp://app:app@rabbitmq:5672// with
        # `docker compose --profile rabbitmq up` (results stay in Redis: RabbitMQ keeps none).
        "CELERY_BROKER_URL": "${CELERY_BROKER_URL:-redis://redis:6379/0}",
        "CELERY_RESULT_BACKEND": "${CELERY_RESULT_BACKEND:-redis://redis:6379/0}",
        "RABBITMQ_CONSUMER_TIMEOUT": str(pools.consumer_timeout(registry)),
        "AWS_STORAGE_BUCKET_NAME": "claimcheck",
        "AWS_S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_S3_PUBLIC_ENDPOINT_URL": "http://localhost:9000",
        "AWS_ACCESS_KEY_ID": "${MINIO_ROOT_USER:?set MINIO_ROOT_USER in .env}",
        "AWS_SECRET_ACCESS_KEY": "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in .env}",
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,web",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        # Mailpit catches every e-mail (web UI on :8025); set EMAIL_URL in .env for a real SMTP server.
        "EMAIL_URL": "${EMAIL_URL:-smtp://mailpit:1025}",
    }
    depends = {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "createbucket": {"condition": "service_completed_successfully"},
    }
    migrated = {**depends, "migrate": {"condition": "service_completed_successfully"}}
    consumer_timeout_ms = pools.consumer_timeout(registry) * 1000
    app: dict[str, Any] = {
        "image": IMAGE,
        "env_file": [".env"],
        "environment": app_env,
        "depends_on": migrated,
        # A process that exits (a worker whose broker went away, an out-of-memory kill) is started again.
        "restart": "unless-stopped",
    }
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
        "rabbitmq": {
            "image": "rabbitmq:3.13-management",
            "profiles": ["rabbitmq"],
            "environment": {
                "RABBITMQ_DEFAULT_USER": "app",
                "RABBITMQ_DEFAULT_PASS": "app",
                # consumer_timeout is a server setting (milliseconds): above every pool's lease, as pools.py derives.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"-rabbit consumer_timeout {consumer_timeout_ms}",
            },
            "volumes": ["rabbitmqdata:/var/lib/rabbitmq"],
            "healthcheck": {"test": ["CMD", "rabbitmq-diagnostics", "-q", "ping"], "interval": "10s", "retries": 10},
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
        "mailpit": {"image": "axllent/mailpit:latest", "ports": ["8025:8025"]},
        # The one service that builds the image; the others run it once it is built and migrated.
        "migrate": {
            "build": ".",
            **app,
            "command": "python manage.py migrate --noinput",
            "depends_on": depends,
            "restart": "no",
        },
        "web": {
            **app,
            "command": shell_line(web_command("0.0.0.0", "8000")),  # noqa: S104 - inside the container
            "ports": ["8000:8000"],
        },
    }
    for p in registry:
        services[f"worker-{p.name}"] = {
            **app,
            "command": shell_line(worker_command(p)),
            "stop_grace_period": f"{pools.stop_grace_period(p)}s",
            # SIGTERM from `docker compose stop` starts Celery's soft shutdown instead of a warm one.
            "environment": {**app_env, "REMAP_SIGTERM": "SIGQUIT"},
            "healthcheck": {"test": ["CMD", *heartbeat_command(p)], "interval": "30s", "retries": 3},
        }
    services["beat"] = {**app, "command": shell_line(beat_command(f"{CONTAINER_RUN_DIR}/celerybeat-schedule"))}
    services["flower"] = {**app, "command": shell_line(flower_command("--port=5555")), "ports": ["5555:5555"]}
    return {"services": services, "volumes": {"pgdata": {}, "redisdata": {}, "rabbitmqdata": {}, "s3data": {}}}


def kubernetes_name(*parts: str) -> str:
    """Return the Kubernetes name of a project resource: the slug and ``parts``, joined by "-", with "-" for "_".

    Kubernetes names (and the Services' host names) are DNS-1123 labels: lowercase letters, digits and "-" only,
    so a slug like ``acme_jobs`` or a pool like ``bulk_mail`` must not reach them as they are.
    """
    return "-".join(part.replace("_", "-") for part in (PACKAGE, *parts))


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": kubernetes_name(), "app.kubernetes.io/component": component.replace("_", "-")}


def _deployment(component: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """Return a Deployment of one container of the project's image, configured from the ConfigMap and Secret."""
    container = {
        "name": component.replace("_", "-"),
        "image": IMAGE,
        "envFrom": [
            {"configMapRef": {"name": kubernetes_name("config")}},
            {"secretRef": {"name": kubernetes_name("secrets")}},
        ],
        **container,
        "volumeMounts": [{"name": "run", "mountPath": CONTAINER_RUN_DIR}],
    }
    pod_spec = {**spec, "containers": [container], "volumes": [{"name": "run", "emptyDir": {}}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": kubernetes_name(component), "labels": _labels(component)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _labels(component)},
            "template": {"metadata": {"labels": _labels(component)}, "spec": pod_spec},
        },
    }


def _service(component: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": kubernetes_name(component), "labels": _labels(component)},
        "spec": {"selector": _labels(component), "ports": [{"port": port, "targetPort": port}]},
    }


def worker_deployment(pool: pools.Pool) -> dict[str, Any]:
    """Return the Deployment of ``pool``'s workers: same command as compose, grace period from the registry."""
    probe = {"exec": {"command": heartbeat_command(pool)}, "initialDelaySeconds": 30, "periodSeconds": 30}
    container = {
        "command": worker_command(pool),
        # SIGTERM from the kubelet starts Celery's soft shutdown instead of a warm one.
        "env": [{"name": "REMAP_SIGTERM", "value": "SIGQUIT"}],
        "livenessProbe": {**probe, "failureThreshold": 3},
    }
    deployment = _deployment(
        f"worker-{pool.name}", container, terminationGracePeriodSeconds=pools.stop_grace_period(pool)
    )
    # Its ScaledObject sets the replicas: a count here would reset them at every `kubectl apply`.
    del deployment["spec"]["replicas"]
    return deployment


def scaled_object(pool: pools.Pool) -> dict[str, Any]:
    """Return the KEDA ScaledObject of ``pool``'s Deployment: replicas from the registry, scaled on what it owes.

    The trigger reads the web service's ``/api/queues/owed`` (waiting plus unacknowledged messages, from the
    broker itself) with KEDA's metrics-api scaler: a Redis list length alone misses the messages workers have
    reserved, and the pool would shrink while busy. One replica is wanted per ``scale_target`` messages owed.
    """
    deployment = kubernetes_name("worker", pool.name)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": deployment, "labels": _labels(f"worker-{pool.name}")},
        "spec": {
            "scaleTargetRef": {"name": deployment},
            "minReplicaCount": pool.min_replicas,
            "maxReplicaCount": pool.max_replicas,
            "pollingInterval": KEDA_POLLING_INTERVAL,
            "cooldownPeriod": KEDA_COOLDOWN_PERIOD,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    # One pod at a time, after a quiet window: each leaving pod gets its whole grace period to
                    # finish or requeue its tasks (terminationGracePeriodSeconds, above its soft shutdown).
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": KEDA_COOLDOWN_PERIOD,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": pools.stop_grace_period(pool)}],
                        }
                    }
                }
            },
            "triggers": [
                {
                    "type": "metrics-api",
                    "metadata": {
                        "url": f"http://{kubernetes_name('web')}:{WEB_PORT}/api/queues/owed",
                        "valueLocation": f"owed.{pool.queue}",
                        "format": "json",
                        "targetValue": str(pool.scale_target),
                        "activationTargetValue": "0",
                        "authMode": "bearer",
                    },
                    "authenticationRef": {"name": kubernetes_name("queue-metrics")},
                }
            ],
        },
    }


def trigger_authentication() -> dict[str, Any]:
    """Return the KEDA TriggerAuthentication that hands the metrics token (from the Secret) to every trigger."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": kubernetes_name("queue-metrics"), "labels": _labels("autoscaling")},
        "spec": {
            "secretTargetRef": [
                {"parameter": "token", "name": kubernetes_name("secrets"), "key": "QUEUE_METRICS_TOKEN"}
            ]
        },
    }


def kubernetes_documents(registry: tuple[pools.Pool, ...] = pools.POOLS) -> dict[str, list[dict[str, Any]]]:
    """Return the Kubernetes manifests as data, by file name under ``k8s/``."""
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": kubernetes_name("config"), "labels": _labels("config")},
        "data": {
            "DJANGO_SETTINGS_MODULE": f"{PACKAGE}.config.settings.production",
            "RUN_DIR": CONTAINER_RUN_DIR,
            # KEDA reaches the web service by its Service name; the kubelet's probes name localhost (below).
            "DJANGO_INTERNAL_HOSTS": f"{kubernetes_name('web')},localhost",
            # What the RabbitMQ ConfigMap below sets: `manage.py check` compares it with the pools' leases.
            "RABBITMQ_CONSUMER_TIMEOUT": str(pools.consumer_timeout(registry)),
        },
    }
    # For a RabbitMQ broker: mount this rabbitmq.conf (or copy its line into the operator's additionalConfig).
    rabbitmq = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": kubernetes_name("rabbitmq-conf"), "labels": _labels("rabbitmq")},
        "data": {"rabbitmq.conf": rabbitmq_conf(registry)},
    }
    # The kubelet's probe names the pod's IP as its Host, which production's ALLOWED_HOSTS refuses (400, and the pod
    # never turns ready): it names localhost instead, one of DJANGO_INTERNAL_HOSTS above and a valid host name
    # whatever the Service is called.
    probe_host = [{"name": "Host", "value": "localhost"}]
    http_probe = {"httpGet": {"path": "/healthz", "port": 8000, "httpHeaders": probe_host}, "periodSeconds": 10}
    web = _deployment(
        "web",
        {
            "command": web_command("0.0.0.0", "8000"),  # noqa: S104 - inside the pod
            "ports": [{"containerPort": 8000}],
            "readinessProbe": http_probe,
            "livenessProbe": {**http_probe, "initialDelaySeconds": 10},
        },
    )
    # Two beats would schedule every periodic task twice: never more than one, even during a rollout.
    beat = _deployment("beat", {"command": beat_command(f"{CONTAINER_RUN_DIR}/celerybeat-schedule")})
    beat["spec"]["strategy"] = {"type": "Recreate"}
    flower = _deployment("flower", {"command": flower_command("--port=5555"), "ports": [{"containerPort": 5555}]})
    migrate = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": kubernetes_name("migrate"), "labels": _labels("migrate")},
        "spec": {
            "backoffLimit": 3,
            "template": {
                "metadata": {"labels": _labels("migrate")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [
                        {
                            "name": "migrate",
                            "image": IMAGE,
                            "command": ["python", "manage.py", "migrate", "--noinput"],
                            "envFrom": web["spec"]["template"]["spec"]["containers"][0]["envFrom"],
                        }
                    ],
                },
            },
        },
    }
    files: dict[str, list[dict[str, Any]]] = {
        "config.yaml": [config, rabbitmq],
        "migrate.yaml": [migrate],
        "web.yaml": [web, _service("web", 8000)],
    }
    files.update({f"worker-{p.name}.yaml": [worker_deployment(p)] for p in registry})
    # KEDA's resources (install KEDA first, or drop these files from kustomization.yaml).
    files.update({f"scaledobject-{p.name}.yaml": [scaled_object(p)] for p in registry})
    files["scaledobject-auth.yaml"] = [trigger_authentication()]
    files["beat.yaml"] = [beat]
    files["flower.yaml"] = [flower, _service("flower", 5555)]
    files["kustomization.yaml"] = [
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": sorted(files)}
    ]
    return files


class _Dumper(yaml.SafeDumper):
    """Write YAML as a person would: no anchors, short lists of scalars on one line."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    scalars = all(isinstance(item, str | int) for item in data)
    flow = scalars and sum(len(str(item)) + 2 for item in data) <= FLOW_LIST_WIDTH
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_yaml(*documents: Any) -> str:
    """Return ``documents`` as one YAML stream under the generated-file header."""
    text = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=120, explicit_start=len(documents) > 1)
    return HEADER + text


def render_compose(registry: tuple[pools.Pool, ...] = pools.POOLS) -> str:
    """Return compose.yaml text."""
    return dump_yaml(compose_document(registry))


def render_all(
    registry: tuple[pools.Pool, ...] = pools.POOLS, kubernetes: bool = KUBERNETES_MANIFESTS
) -> dict[str, str]:
    """Return every generated process file by its path relative to the project root."""
    files = {"Procfile": render_procfile(registry), "compose.yaml": render_compose(registry)}
    if kubernetes:
        files.update({f"k8s/{name}": dump_yaml(*docs) for name, docs in kubernetes_documents(registry).items()})
    return files


def write_all(project_dir: Path = PROJECT_DIR) -> list[str]:
    """Write the process files under ``project_dir``, drop stale manifests, and return the files' names."""
    files = render_all()
    # A pool removed from the registry must not keep its Deployment; files a person wrote stay.
    stale = set((project_dir / "k8s").glob("*.yaml")) - {project_dir / name for name in files}
    for path in stale:
        if path.read_text().startswith(HEADER):
            path.unlink()
    for name, text in files.items():
        (project_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (project_dir / name).write_text(text)
    return sorted(files)


if __name__ == "__main__":
    print("wrote", ", ".join(write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else PROJECT_DIR)))
