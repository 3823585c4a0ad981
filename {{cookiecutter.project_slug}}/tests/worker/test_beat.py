"""Beat starts with real services and no run folder yet, as in a fresh container."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from {{ cookiecutter.project_slug }}.worker import procfiles

from support.servers import Process, wait_until

pytestmark = pytest.mark.workers


def test_beat_creates_its_run_folder_with_redis_and_postgres_configured(worker_env, tmp_path):
    run_dir = tmp_path / "fresh" / "run"
    schedule = run_dir / "celerybeat-schedule"
    # compose's and Kubernetes' command line: the schedule under the run folder, which does not exist yet.
    argv = [sys.executable, "-m", *procfiles.beat_command(str(schedule))]
    beat = Process(argv, tmp_path / "beat.log", env={**worker_env, "RUN_DIR": str(run_dir)}).start()
    try:
        wait_until(lambda: any(run_dir.glob("celerybeat-schedule*")) or not beat.alive(), 60, "beat's schedule")
        time.sleep(2)  # past its first tick: the reaper and the prune are due at start
        assert beat.alive(), beat.log()[-3000:]
        assert "beat: Starting..." in beat.log()
        assert Path(run_dir).is_dir()
    finally:
        beat.stop()
