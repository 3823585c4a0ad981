"""The process files on disk are the registry's rendering, and each runs every pool as the registry says."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.test import override_settings

from {{ cookiecutter.project_slug }} import pools
from {{ cookiecutter.project_slug }}.worker import procfiles

PROJECT_DIR = Path(__file__).resolve().parents[2]
PACKAGE = procfiles.PACKAGE
#: The slug as Kubernetes names carry it (DNS-1123: no "_").
K8S = PACKAGE.replace("_", "-")


def worker_options(argv: list[str]) -> dict[str, str]:
    """Return the ``celery worker`` options in ``argv`` by flag, checking it starts a worker of this app."""
    assert argv[:4] == ["celery", "-A", PACKAGE, "worker"], argv
    options: dict[str, str] = {}
    args = iter(argv[4:])
    for flag in args:
        assert flag.startswith("-"), f"stray argument {flag!r} in {argv}"
        assert flag not in options, f"{flag} given twice in {argv}"
        options[flag] = next(args)
    return options


def expected_options(pool: pools.Pool) -> dict[str, str]:
    """Return the worker options that start ``pool`` as the registry defines it."""
    expected = {
        "-Q": pool.queue,
        "-n": f"{pool.name}@%h",
        "-P": pool.pool,
        "--prefetch-multiplier": str(pool.prefetch_multiplier),
        "-l": "INFO",
    }
    if pool.concurrency is not None:
        expected["-c"] = str(pool.concurrency)
    # Every pool enforces its time limits (the project's threads pool too).
    expected["--soft-time-limit"] = str(pool.soft_time_limit)
    expected["--time-limit"] = str(pool.time_limit)
    if pool.pool == "prefork":
        if pool.max_tasks_per_child is not None:
            expected["--max-tasks-per-child"] = str(pool.max_tasks_per_child)
        if pool.max_memory_per_child is not None:
            expected["--max-memory-per-child"] = str(pool.max_memory_per_child)
    return expected


def assert_one_worker_per_pool(
    commands: dict[str, list[str]], where: str, registry: tuple[pools.Pool, ...] = pools.POOLS
) -> None:
    """Check ``commands`` (by process name) holds exactly one worker per pool, with the pool's options."""
    workers = {name: argv for name, argv in commands.items() if argv[:4] == ["celery", "-A", PACKAGE, "worker"]}
    by_queue: dict[str, list[str]] = {}
    for name, argv in workers.items():
        by_queue.setdefault(worker_options(argv)["-Q"], []).append(name)
    assert sorted(by_queue) == sorted(pools.queue_names(registry)), f"{where}: worker queues {sorted(by_queue)}"
    for pool in registry:
        assert len(by_queue[pool.queue]) == 1, f"{where}: {by_queue[pool.queue]} all consume {pool.queue!r}"
        assert worker_options(workers[by_queue[pool.queue][0]]) == expected_options(pool), f"{where}: {pool.name}"


def read_yaml_documents(path: Path) -> list[Any]:
    """Return every YAML document in ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_files_on_disk_are_the_registry_rendering():
    rendered = procfiles.render_all()
    for name, text in rendered.items():
        path = PROJECT_DIR / name
        assert path.exists(), f"{name} is missing: run `make procfiles`"
        assert path.read_text() == text, f"{name} differs from {PACKAGE}/pools.py: run `make procfiles`"
    manifests = {f"k8s/{path.name}" for path in (PROJECT_DIR / "k8s").glob("*.yaml")}
    assert manifests == {name for name in rendered if name.startswith("k8s/")}


def test_procfile_runs_web_one_worker_per_pool_beat_and_flower():
    lines = [line for line in (PROJECT_DIR / "Procfile").read_text().splitlines() if line and line[0] != "#"]
    argvs = {name: shlex.split(command) for name, _, command in (line.partition(": ") for line in lines)}
    # Every line execs its command, so make dev's SIGTERM reaches the process itself (worker/devstack.py).
    assert {name: argv[0] for name, argv in argvs.items()} == dict.fromkeys(argvs, "exec")
    commands = {name: argv[1:] for name, argv in argvs.items()}
    assert_one_worker_per_pool(commands, "Procfile")
    assert commands["web"][:2] == ["uvicorn", f"{PACKAGE}.config.asgi:application"]
    # Django's ASGI app has no lifespan: uvicorn's "auto" would log "ASGI 'lifespan' protocol appears unsupported".
    assert commands["web"][-2:] == ["--lifespan", "off"]
    assert commands["beat"][:4] == ["celery", "-A", PACKAGE, "beat"]
    assert commands["flower"][:4] == ["celery", "-A", PACKAGE, "flower"]
    assert commands["summary"] == ["python", "manage.py", "stacksummary"]
    assert set(commands) == {"web", "beat", "flower", "summary", *(f"worker_{p.name}" for p in pools.POOLS)}


#: The README's "Adding a pool" recipe: a threads pool with a 10 s soft limit (a soft shutdown of 5 s).
SHORT_POOL = pools.Pool(
    name="test_short", purpose="short webhook calls", pool="threads", concurrency=8, soft_time_limit=10, time_limit=20
)


def check_compose_workers(document: dict[str, Any], registry: tuple[pools.Pool, ...]) -> None:
    """Check compose's worker services run each pool of ``registry`` with its own grace period and probe."""
    services = document["services"]
    commands = {name: shlex.split(s["command"]) for name, s in services.items() if isinstance(s.get("command"), str)}
    assert_one_worker_per_pool(commands, "compose.yaml", registry)
    for pool in registry:
        worker = services[f"worker-{pool.name}"]
        grace = int(worker["stop_grace_period"].removesuffix("s"))
        assert grace == pools.stop_grace_period(pool) == pool.soft_shutdown_timeout + pools.GRACE_MARGIN
        assert grace > pool.soft_shutdown_timeout, f"worker-{pool.name} is killed before its soft shutdown ends"
        assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
        assert worker["restart"] == "unless-stopped", f"worker-{pool.name} stays down once it exits"
        assert worker["healthcheck"]["test"][1:] == [
            "python",
            "-m",
            f"{PACKAGE}.worker.heartbeat",
            "--check",
            pool.name,
        ]
        assert worker["environment"]["DJANGO_SETTINGS_MODULE"] == f"{PACKAGE}.config.settings.production"


def test_compose_has_every_service_and_one_worker_per_pool():
    (document,) = read_yaml_documents(PROJECT_DIR / "compose.yaml")
    services = document["services"]
    assert {"postgres", "redis", "web", "beat", "flower"} <= set(services)
    s3 = [name for name, s in services.items() if "minio/minio" in str(s.get("image"))]
    assert s3, "no S3-compatible server in compose.yaml"
    buckets = [name for name, s in services.items() if "mc mb" in " ".join(s.get("entrypoint") or [])]
    assert buckets, "no service creates the bucket"
    assert services[buckets[0]]["depends_on"][s3[0]]["condition"] == "service_healthy"
    check_compose_workers(document, pools.POOLS)
    assert shlex.split(services["web"]["command"])[:2] == ["uvicorn", f"{PACKAGE}.config.asgi:application"]
    assert {name: services[name]["restart"] for name in ("web", "beat", "flower")} == dict.fromkeys(
        ("web", "beat", "flower"), "unless-stopped"
    )


def test_a_short_pool_shortens_only_its_own_grace_period():
    registry = (*pools.POOLS, SHORT_POOL)
    check_compose_workers(procfiles.compose_document(registry), registry)
    services = procfiles.compose_document(registry)["services"]
    assert services["worker-test_short"]["stop_grace_period"] == f"{5 + pools.GRACE_MARGIN}s"
    # The reports pool keeps the full soft shutdown, whatever pool is added next to it.
    reports = pools.SOFT_SHUTDOWN_TIMEOUT + pools.GRACE_MARGIN
    assert services["worker-reports"]["stop_grace_period"] == f"{reports}s"
    deployments = _deployments(procfiles.kubernetes_documents(registry))
    grace = {
        name: d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds") for name, d in deployments.items()
    }
    assert grace[f"{K8S}-worker-test-short"] == 5 + pools.GRACE_MARGIN
    assert grace[f"{K8S}-worker-reports"] == reports


def _deployments(documents: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for docs in documents.values() for d in docs if d["kind"] == "Deployment"}


def test_kubernetes_manifests_run_each_pool_with_its_grace_period_and_probe():
    # Rendered whether or not this project keeps k8s/, so the renderer itself stays tested.
    deployments = _deployments(procfiles.kubernetes_documents())
    assert {f"{K8S}-web", f"{K8S}-beat", f"{K8S}-flower"} <= set(deployments)
    commands = {name: d["spec"]["template"]["spec"]["containers"][0]["command"] for name, d in deployments.items()}
    assert_one_worker_per_pool(commands, "k8s")
    for pool in pools.POOLS:
        spec = deployments[f"{K8S}-worker-{pool.name.replace('_', '-')}"]["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] == pools.stop_grace_period(pool)
        assert spec["terminationGracePeriodSeconds"] > pool.soft_shutdown_timeout
        (container,) = spec["containers"]
        assert {"name": "REMAP_SIGTERM", "value": "SIGQUIT"} in container["env"]
        probe = container["livenessProbe"]["exec"]["command"]
        assert probe == ["python", "-m", f"{PACKAGE}.worker.heartbeat", "--check", pool.name]
    assert deployments[f"{K8S}-beat"]["spec"]["strategy"]["type"] == "Recreate"
    # A Deployment's pods restart a container that exits; Always is the only policy a Deployment accepts.
    assert {d["spec"]["template"]["spec"].get("restartPolicy", "Always") for d in deployments.values()} == {"Always"}


def test_the_web_pods_probes_pass_production_host_validation(client):
    """The kubelet probes /healthz by the pod's IP unless the probe names a Host: production must answer it."""
    documents = procfiles.kubernetes_documents()
    (config,) = [d for d in documents["config.yaml"] if d["kind"] == "ConfigMap" and "RUN_DIR" in d["data"]]
    web = _deployments(documents)[f"{K8S}-web"]["spec"]["template"]["spec"]["containers"][0]
    # What config/settings/production.py allows: the public names, plus the names other services use.
    allowed = ["jobs.example.com", *config["data"]["DJANGO_INTERNAL_HOSTS"].split(",")]
    for kind in ("readinessProbe", "livenessProbe"):
        probe = web[kind]["httpGet"]
        host = {h["name"]: h["value"] for h in probe.get("httpHeaders", [])}.get("Host", f"10.1.2.3:{probe['port']}")
        with override_settings(ALLOWED_HOSTS=allowed):
            answer = client.get(probe["path"], HTTP_HOST=host)
        assert answer.status_code == 200, (kind, host, answer.status_code)


#: A Kubernetes object name, Service host name or container name: a DNS-1123 label.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _names(document: Any) -> list[str]:
    """Return every value named "name" in a manifest that names an object or a container (not env or headers)."""
    found = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key in ("env", "httpHeaders", "secretTargetRef"):
                continue
            if key == "name" and isinstance(value, str):
                found.append(value)
            found.extend(_names(value))
    elif isinstance(document, list):
        for item in document:
            found.extend(_names(item))
    return found


def test_kubernetes_names_and_the_metrics_host_are_valid_for_a_pool_with_an_underscore(client):
    """Kubernetes refuses names with "_" (and Django refuses such a host): slug and pool names are spelled with "-"."""
    registry = (*pools.POOLS, SHORT_POOL)
    documents = procfiles.kubernetes_documents(registry)
    names = [name for docs in documents.values() for document in docs for name in _names(document)]
    assert f"{K8S}-worker-test-short" in names
    assert [name for name in names if not DNS_LABEL.fullmatch(name)] == []
    (config,) = [d for d in documents["config.yaml"] if d["kind"] == "ConfigMap" and "RUN_DIR" in d["data"]]
    allowed = config["data"]["DJANGO_INTERNAL_HOSTS"].split(",")
    (scaled,) = documents["scaledobject-test_short.yaml"]
    url = urlsplit(scaled["spec"]["triggers"][0]["metadata"]["url"])
    with override_settings(ALLOWED_HOSTS=allowed):
        answer = client.get("/healthz", HTTP_HOST=url.netloc)
    assert answer.status_code == 200, (url.netloc, answer.status_code)


@pytest.mark.skipif(not procfiles.KUBERNETES_MANIFESTS, reason="generated without kubernetes_manifests")
def test_kubernetes_files_on_disk_parse_and_are_listed_in_the_kustomization():
    files = {path.name: read_yaml_documents(path) for path in (PROJECT_DIR / "k8s").glob("*.yaml")}
    (kustomization,) = files.pop("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(files)
    on_disk = {f"k8s/{name}": docs for name, docs in files.items()}
    assert set(_deployments(on_disk)) == set(_deployments(procfiles.kubernetes_documents()))


def test_a_new_pool_is_one_registry_entry(tmp_path):
    extra = pools.Pool(name="exports", purpose="CSV exports", pool="threads", concurrency=4, max_attempts=2)
    registry = (*pools.POOLS, extra)
    procfile = procfiles.render_procfile(registry)
    assert "worker_exports: exec celery -A" in procfile
    (compose,) = yaml.safe_load_all(procfiles.render_compose(registry).split("\n", 1)[1])
    assert worker_options(shlex.split(compose["services"]["worker-exports"]["command"])) == expected_options(extra)
    assert "worker-exports.yaml" in procfiles.kubernetes_documents(registry)


def test_write_all_removes_only_its_own_stale_manifests(tmp_path):
    (tmp_path / "k8s").mkdir()
    stale = tmp_path / "k8s" / "worker-gone.yaml"
    stale.write_text(procfiles.HEADER + "kind: Deployment\n")
    mine = tmp_path / "k8s" / "ingress.yaml"
    mine.write_text("kind: Ingress\n")
    written = procfiles.write_all(tmp_path)
    assert not stale.exists()
    assert mine.exists()
    assert set(written) == set(procfiles.render_all())
    assert (tmp_path / "Procfile").read_text() == procfiles.render_procfile()


def test_rendered_yaml_has_no_anchors_and_parses_back():
    text = procfiles.render_compose()
    assert "&id" not in text, "compose.yaml uses YAML anchors"
    assert yaml.safe_load(text) == procfiles.compose_document()


#: The Kubernetes release whose API schemas the manifests are checked against (bundled by kubernetes-validate).
KUBERNETES_VERSION = "1.33.0"
#: The fields KEDA documents for a ScaledObject (keda.sh/v1alpha1, its "ScaledObject specification"), as nested
#: dicts; a list means "a list of these"; None means a value that is not checked further.
SCALED_OBJECT_FIELDS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "metadata": None,
    "spec": {
        "scaleTargetRef": {"apiVersion": None, "kind": None, "name": None, "envSourceContainerName": None},
        "pollingInterval": None,
        "cooldownPeriod": None,
        "initialCooldownPeriod": None,
        "idleReplicaCount": None,
        "minReplicaCount": None,
        "maxReplicaCount": None,
        "fallback": {"failureThreshold": None, "replicas": None, "behavior": None},
        "advanced": {
            "restoreToOriginalReplicaCount": None,
            "horizontalPodAutoscalerConfig": {"name": None, "behavior": None},
            "scalingModifiers": None,
        },
        "triggers": [
            {
                "type": None,
                "name": None,
                "metadata": None,
                "metricType": None,
                "useCachedMetrics": None,
                "authenticationRef": {"name": None, "kind": None},
            }
        ],
    },
}
#: The metadata the metrics-api scaler documents; KEDA reads every metadata value as a string.
METRICS_API_METADATA = {
    "url",
    "format",
    "valueLocation",
    "targetValue",
    "activationTargetValue",
    "unsafeSsl",
    "authMode",
}


def unknown_fields(value: Any, schema: Any, path: str = "") -> list[str]:
    """Return the paths in ``value`` that ``schema`` (see :data:`SCALED_OBJECT_FIELDS`) does not document."""
    if schema is None:
        return []
    if isinstance(schema, list):
        return [p for i, item in enumerate(value) for p in unknown_fields(item, schema[0], f"{path}[{i}]")]
    found = [f"{path}.{key}" for key in value if key not in schema]
    for key in (k for k in value if k in schema):
        found += unknown_fields(value[key], schema[key], f"{path}.{key}")
    return found


def test_kubernetes_manifests_pass_the_kubernetes_schemas_offline():
    import kubernetes_validate

    checked = 0
    for documents in procfiles.kubernetes_documents().values():
        for document in documents:
            if document["apiVersion"].startswith(("keda.sh/", "kustomize.config.k8s.io/")):
                continue  # not Kubernetes API objects: KEDA's are checked below
            # Strict: a field the API does not know fails, as `kubectl apply --validate=strict` would.
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            checked += 1
    assert checked >= len(pools.POOLS) + 4
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):  # the validator does reject what it should
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_each_pool_has_a_scaled_object_on_what_it_owes():
    import kubernetes_validate

    documents = procfiles.kubernetes_documents()
    deployments = _deployments(documents)
    (auth,) = documents["scaledobject-auth.yaml"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "token", "name": f"{K8S}-secrets", "key": "QUEUE_METRICS_TOKEN"}
    ]
    for pool in pools.POOLS:
        (scaled,) = documents[f"scaledobject-{pool.name}.yaml"]
        assert unknown_fields(scaled, SCALED_OBJECT_FIELDS) == []
        spec = scaled["spec"]
        deployment = deployments[spec["scaleTargetRef"]["name"]]
        assert deployment["metadata"]["name"] == f"{K8S}-worker-{pool.name.replace('_', '-')}"
        assert "replicas" not in deployment["spec"], "the Deployment's replicas would fight the autoscaler"
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (pool.min_replicas, pool.max_replicas)
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "metrics-api"
        assert set(trigger["metadata"]) <= METRICS_API_METADATA
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), "KEDA metadata values are strings"
        assert trigger["metadata"]["url"] == f"http://{K8S}-web:{procfiles.WEB_PORT}/api/queues/owed"
        assert trigger["metadata"]["valueLocation"] == f"owed.{pool.queue}"
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
        # Scale-down takes one pod per grace period, so a leaving pod is never killed before its soft shutdown ends.
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["policies"] == [
            {"type": "Pods", "value": 1, "periodSeconds": pools.stop_grace_period(pool)}
        ]
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > pool.soft_shutdown_timeout
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "check"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "check"},
                "maxReplicas": spec["maxReplicaCount"],
                "behavior": behavior,
            },
        }
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)  # KEDA hands it to an HPA as it is
    misspelt: dict[str, Any] = {"spec": {"triggers": [{"metdata": {}}]}}
    assert unknown_fields(misspelt, SCALED_OBJECT_FIELDS) == [".spec.triggers[0].metdata"]


def test_every_generated_consumer_timeout_is_the_registry_s():
    needed = pools.consumer_timeout()
    assert needed > pools.RABBITMQ_DEFAULT_CONSUMER_TIMEOUT  # the reports pool's 30-minute limit needs more
    (compose,) = read_yaml_documents(PROJECT_DIR / "compose.yaml")
    rabbitmq = compose["services"]["rabbitmq"]["environment"]
    assert rabbitmq["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] == f"-rabbit consumer_timeout {needed * 1000}"
    assert compose["services"]["worker-default"]["environment"]["RABBITMQ_CONSUMER_TIMEOUT"] == str(needed)
    config, rabbitmq_conf = procfiles.kubernetes_documents()["config.yaml"]
    assert config["data"]["RABBITMQ_CONSUMER_TIMEOUT"] == str(needed)
    assert rabbitmq_conf["data"]["rabbitmq.conf"] == f"consumer_timeout = {needed * 1000}\n"
