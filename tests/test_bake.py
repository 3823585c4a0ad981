"""Every option combination bakes into a clean, lint-free project; bad slugs are refused; secrets are fresh."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import COMBINATIONS, TEMPLATE, bake_into, project_env, run

#: Folders a bake or a test run creates that are not generated files.
NOT_GENERATED = {".venv", "run", ".pytest_cache", ".ruff_cache", "__pycache__"}
SECRETS = ("DJANGO_SECRET_KEY", "FLOWER_PASSWORD", "QUEUE_METRICS_TOKEN")


def generated_files(project: Path) -> list[Path]:
    """Return every file the bake wrote."""
    files = []
    for root, dirs, names in os.walk(project):
        dirs[:] = [d for d in dirs if d not in NOT_GENERATED]
        files += [Path(root) / name for name in names]
    return files


def env_values(path: Path) -> dict[str, str]:
    """Return the ``NAME=value`` lines of an env file."""
    lines = [line for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_no_template_syntax_is_left(bake, combination):
    project = bake(combination)
    files = generated_files(project.path)
    assert len(files) > 30
    for path in files:
        text = path.read_text(errors="replace")
        name = path.relative_to(project.path)
        assert "cookiecutter" not in text.lower(), f"{name} mentions cookiecutter"
        if path.suffix == ".html":  # Django templates have their own {{ }} and {% %}
            continue
        assert "{{" not in text, f"{name} still has '{{{{'"
        assert "{%" not in text, f"{name} still has '{{%'"


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_ruff_is_clean_and_the_lock_installs(synced, combination):
    project = synced(combination)
    check = run(["uv", "run", "--locked", "ruff", "check", "."], project.path)
    assert check.returncode == 0, check.stdout[-4000:]
    formatted = run(["uv", "run", "--locked", "ruff", "format", "--check", "."], project.path)
    assert formatted.returncode == 0, formatted.stdout[-4000:]
    layers = run(["uv", "run", "--locked", "lint-imports"], project.path)
    assert layers.returncode == 0, layers.stdout[-4000:]


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_process_files_match_the_registry(synced, combination):
    """Run each bake's own no-drift test: Procfile, compose.yaml and k8s/ as the registry renders them."""
    project = synced(combination)
    pytest = ["uv", "run", "--locked", "pytest", "-q", "-p", "no:cacheprovider"]
    done = run([*pytest, "tests/worker/test_procfiles.py"], project.path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    if project.context.get("kubernetes_manifests") == "y":
        assert "skipped" not in done.stdout, done.stdout[-2000:]


def test_the_slug_names_the_package_everywhere(synced):
    project = synced("acme-jobs")
    assert (project.path / "acme_jobs" / "worker" / "app.py").exists()
    assert not (project.path / "proj").exists()
    assert 'name = "acme_jobs"' in (project.path / "pyproject.toml").read_text()
    procfile = (project.path / "Procfile").read_text()
    assert "celery -A acme_jobs worker -Q images" in procfile
    # The package imports and Django starts under its own name.
    check = run(["uv", "run", "--locked", "python", "manage.py", "check"], project.path)
    assert check.returncode == 0, check.stdout + check.stderr
    info = run(["uv", "run", "--locked", "python", "-m", "acme_jobs.worker.procfiles", str(project.path)], project.path)
    assert info.returncode == 0, info.stderr
    assert (project.path / "Procfile").read_text() == procfile


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_kubernetes_manifests_only_when_chosen(bake, combination):
    project = bake(combination)
    manifests = sorted(p.name for p in (project.path / "k8s").glob("*.yaml"))
    if project.context.get("kubernetes_manifests") == "y":
        assert {"kustomization.yaml", "web.yaml", "beat.yaml", "flower.yaml", "worker-images.yaml"} <= set(manifests)
        # Kubernetes names spell the slug with "-" for "_" (DNS-1123).
        deployment = f"name: {project.slug.replace('_', '-')}-worker-reports"
        assert deployment in (project.path / "k8s" / "worker-reports.yaml").read_text()
    else:
        assert not (project.path / "k8s").exists()
        assert "KUBERNETES_MANIFESTS = False" in (project.path / project.slug / "worker" / "procfiles.py").read_text()


@pytest.mark.parametrize("combination", COMBINATIONS)
def test_demo_flows_only_when_chosen(bake, combination):
    project = bake(combination)
    package = project.path / project.slug
    chosen = project.context.get("demo_flows", "y") == "y"
    assert (package / "demo").exists() == chosen
    assert (project.path / "tests" / "demo").exists() == chosen
    settings = (package / "config" / "settings" / "base.py").read_text()
    assert (f'"{project.slug}.demo"' in settings) == chosen
    readme = (project.path / "README.md").read_text()
    assert ("### The demo flows" in readme) == chosen
    # The jobs app stays either way, and only INSTALLED_APPS names the demo outside it.
    assert (package / "jobs" / "kinds.py").exists()
    for path in package.rglob("*.py"):
        if "demo" not in path.relative_to(package).parts and path.name != "base.py":
            assert f"{project.slug}.demo" not in path.read_text(), path


@pytest.mark.parametrize("slug", ["celery", "django", "test", "1abc", "My-Proj", "class"])
def test_bad_slug_fails_the_pre_gen_hook_naming_it(slug, tmp_path):
    cli = [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path)]
    done = subprocess.run(
        [*cli, str(TEMPLATE), f"project_slug={slug}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert f"project_slug {slug!r}" in done.stderr, done.stderr[-2000:]
    assert not any(tmp_path.iterdir()), "a refused bake left files behind"


def test_env_has_fresh_secrets_and_is_ignored(bake, tmp_path):
    project = bake("default")
    env_file = project.path / ".env"
    assert env_file.exists()
    assert env_file.stat().st_mode & 0o077 == 0, ".env is readable by other users"
    values = env_values(env_file)
    example = env_values(project.path / ".env.example")
    for name in SECRETS:
        assert len(values[name]) >= 32, name
        assert example[name] == "", f".env.example carries a value for {name}"
    assert len(values["DJANGO_SECRET_KEY"]) >= 50  # production settings refuse shorter keys

    again = env_values(bake_into(tmp_path) / ".env")
    for name in SECRETS:
        assert again[name] != values[name], f"two bakes share {name}"

    if shutil.which("git") is None:
        pytest.fail("git is not installed", pytrace=False)
    repo = tmp_path / "repo"
    shutil.copytree(project.path, repo, ignore=shutil.ignore_patterns(".venv"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=repo, check=False)
    assert ignored.returncode == 0, ".env is not git-ignored"
    tracked = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=repo, check=False)
    assert tracked.returncode == 1, ".env.example is git-ignored"


#: Test modules of a generated project that neither know nor load the demo app: the demo_flows=n bake has them
#: byte for byte as the default bake does, over the same code, so its make test leaves them to the default bake's.
DEMO_INDEPENDENT = (
    "tests/idempotency",
    "tests/claimcheck",
    "tests/worker/test_shutdown.py",
    "tests/worker/test_threadpool.py",
    "tests/worker/test_routing.py",
    "tests/worker/test_flower.py",
    "tests/worker/test_brokerfiles.py",
    "tests/worker/test_rabbitmq_cluster.py",
    "tests/worker/test_rabbitmq.py",
    "tests/worker/test_sentinel.py",
    "tests/worker/test_heartbeat.py",
    "tests/worker/test_beat.py",
)


def test_demo_independent_tests_and_their_code_are_the_same_without_the_demo(bake):
    default, no_demo = bake("default").path, bake("no-demo").path
    compared = [Path(m) for m in DEMO_INDEPENDENT] + [
        Path("proj/idempotency"),
        Path("proj/claimcheck"),
        Path("proj/worker"),
    ]
    compared += [
        Path("proj/core"),
        Path("support"),
        Path("tests/tasks"),
        Path("tests/effects"),
        Path("tests/conftest.py"),
    ]
    for relative in compared:
        files = (
            [relative]
            if (default / relative).is_file()
            else sorted(p.relative_to(default) for p in (default / relative).rglob("*.py"))
        )
        assert files, relative
        for name in files:
            assert (no_demo / name).read_bytes() == (default / name).read_bytes(), f"{name} differs without the demo"


#: The bakes whose own `make test` runs here, side by side.
MADE = ("default", "no-demo")


@pytest.fixture(scope="session")
def make_test(synced):
    """Return a function that starts a bake's `make test` once, in the background; every run is stopped at the end.

    The runs go side by side: each bake's suite starts its own services on free loopback ports and works in its own
    folders, and the demo_flows=n subset ends well inside the default bake's run (two pytest-xdist processes), which
    sets the CI time.
    """
    runs: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}

    def start(combination: str) -> tuple[Path, subprocess.Popen[bytes]]:
        if combination not in runs:
            project = synced(combination)
            command = ["make", "test"]
            if combination == "no-demo":
                command.append("PYTEST_ARGS=" + " ".join(f"--ignore={module}" for module in DEMO_INDEPENDENT))
                # One process: beside the default bake's two, a third would only crowd two cores.
                command.append("PYTEST_WORKERS=0")
            log = project.path / "make-test.log"
            with log.open("w") as out:
                process = subprocess.Popen(
                    command,
                    cwd=project.path,
                    env=project_env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            runs[combination] = (log, process)
        return runs[combination]

    yield start
    for _, process in runs.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize("combination", MADE)
def test_generated_project_make_test_passes(make_test, capsys, combination):
    """Run the bake's own `make test`: lint, import layers, types and its suite against real services.

    The demo_flows=n bake runs every test module except those it shares, with their code, with the default bake.
    """
    if shutil.which("make") is None:
        pytest.fail("make is not installed", pytrace=False)
    for each in MADE:
        make_test(each)
    log, process = make_test(combination)
    try:
        returncode = process.wait(timeout=2400)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        returncode = process.wait()
    lines = log.read_text(errors="replace").splitlines()
    # Every pytest run of `make test` ends with a summary line: "N passed, M failed ... in 12.3s".
    summaries = [line.strip(" =") for line in lines if re.search(r"\b(passed|failed|errors?)\b.* in [\d.]+s", line)]
    with capsys.disabled():
        for summary in summaries or ["no pytest summary"]:
            print(f"\n{combination} project's make test: {summary}")
    assert returncode == 0, "\n".join(lines[-150:])
