"""The heartbeat file of each worker process: written once it consumes, its own, removed when it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.project_slug }}.worker import heartbeat

from support.servers import PACKAGE, PROJECT_DIR, Process, wait_until

pytestmark = pytest.mark.workers


def beats(env: dict[str, str]) -> Path:
    return Path(env["RUN_DIR"]) / "heartbeat"


def test_two_workers_of_one_pool_each_keep_their_own_file(start_worker, worker_env):
    first = start_worker("default")
    second = start_worker("default")
    paths = heartbeat.heartbeat_paths("default", beats(worker_env))
    assert paths == sorted(heartbeat.heartbeat_path("default", p.pid, beats(worker_env)) for p in (first, second))

    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, first.log()[-3000:]
    # The first to stop removed its own file only: the pool's probe still sees the second worker.
    assert heartbeat.heartbeat_paths("default", beats(worker_env)) == [
        heartbeat.heartbeat_path("default", second.pid, beats(worker_env))
    ]
    assert heartbeat.check("default", beats(worker_env))[0]

    second.signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0, second.log()[-3000:]
    ok, message = heartbeat.check("default", beats(worker_env))
    assert not ok
    assert "no heartbeat file of 'default'" in message


def test_the_file_appears_once_the_worker_consumes_so_a_sigterm_then_stops_it_cleanly(worker_env, tmp_path):
    # Before, the file was written while the consumer was still starting, and a SIGTERM then exited 1. A test
    # receiver of worker_ready sleeps after the heartbeat's own, so a file written before the loop runs is seen.
    argv = [sys.executable, "-m", "celery", "-A", PACKAGE, "worker", "-Q", "default", "-n", "early@%h", "-l", "INFO"]
    env = {**worker_env, "TEST_SLOW_WORKER_READY": "1"}
    proc = Process([*argv, "--without-mingle", "--without-gossip"], tmp_path / "early.log", env=env).start()
    try:
        path = heartbeat.heartbeat_path("default", proc.pid, beats(worker_env))
        wait_until(lambda: path.exists() or not proc.alive(), 60, "the heartbeat file", interval=0.01)
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.log()[-3000:]
        assert not path.exists()
    finally:
        proc.stop()


def test_the_probe_ignores_a_file_left_by_a_killed_worker_and_the_next_worker_removes_it(start_worker, worker_env):
    killed = start_worker("default")
    left = heartbeat.heartbeat_path("default", killed.pid, beats(worker_env))
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=10)
    assert left.exists()
    ok, message = heartbeat.check("default", beats(worker_env))
    assert not ok
    assert f"was left by process {killed.pid}, which is gone" in message

    start_worker("default")
    assert heartbeat.check("default", beats(worker_env))[0]
    assert not left.exists()

    # The probe the orchestrators run (compose healthcheck, Kubernetes liveness) answers with the same check.
    probe = [sys.executable, "-m", f"{PACKAGE}.worker.heartbeat", "--check", "default"]
    done = subprocess.run(probe, cwd=PROJECT_DIR, env=worker_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    missing = subprocess.run([*probe[:-1], "images"], cwd=PROJECT_DIR, env=worker_env, capture_output=True, text=True)
    assert missing.returncode == 1
    assert "no heartbeat file of 'images'" in missing.stderr
