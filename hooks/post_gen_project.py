"""Write fresh secrets to .env, render the process files, drop files of options not chosen; print the next steps."""

import importlib.util
import secrets
import shlex
import shutil
import string
import sys
from pathlib import Path

PROJECT = Path.cwd()
SLUG = "{{ cookiecutter.project_slug }}"
DEMO_FLOWS = "{{ cookiecutter.demo_flows }}" == "y"


def token(length: int) -> str:
    """Return a random string of letters and digits."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def write_env() -> None:
    """Write .env from .env.example with every secret filled in; never overwrite one."""
    path = PROJECT / ".env"
    if path.exists():
        return
    values = {
        "DJANGO_SECRET_KEY": token(64),
        "FLOWER_USER": "flower",
        "FLOWER_PASSWORD": token(32),
        "MINIO_ROOT_USER": "minio" + token(8).lower(),
        "MINIO_ROOT_PASSWORD": token(32),
        "QUEUE_METRICS_TOKEN": token(32),
    }
    lines = []
    for line in (PROJECT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={values[name]}" if name in values and line.endswith("=") else line)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def render_process_files() -> None:
    """Render Procfile, compose.yaml (and Kubernetes manifests) from the pool registry."""
    package = PROJECT / SLUG
    sys.path.insert(0, str(package))
    try:
        spec = importlib.util.spec_from_file_location("procfiles", package / "worker" / "procfiles.py")
        if spec is None or spec.loader is None:
            raise SystemExit(f"ERROR: cannot load {package / 'worker' / 'procfiles.py'} to render the process files.")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.write_all(PROJECT)
    finally:
        sys.path.remove(str(package))
        sys.modules.pop("pools", None)


def drop_unchosen() -> None:
    """Remove the files of options that were not chosen (Kubernetes manifests are rendered only when chosen)."""
    if not DEMO_FLOWS:
        # The demo app, its tasks and templates, and its tests; the jobs API stays, with no kinds registered.
        shutil.rmtree(PROJECT / SLUG / "demo")
        shutil.rmtree(PROJECT / "tests" / "demo")


def print_next_steps() -> None:
    """Tell the user what to run in the new project."""
    print(
        f"\nGenerated {PROJECT}. Next steps:\n\n"
        f"    cd {shlex.quote(str(PROJECT))}\n"
        "    make dev     # the whole stack: web on http://localhost:8000, a worker per pool, beat, Flower\n"
        "    make test    # lint, type checks and the test suite\n"
    )


drop_unchosen()
write_env()
render_process_files()
print_next_steps()
