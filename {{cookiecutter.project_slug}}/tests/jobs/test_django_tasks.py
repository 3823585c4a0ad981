"""A job kind whose task is a django.tasks task: the jobs API shows its progress, attempts and result."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from {{ cookiecutter.project_slug }}.jobs import kinds
from {{ cookiecutter.project_slug }}.jobs.models import Job

from support.servers import wait_until
from tests.tasks import django_tasks as tasks

pytestmark = [pytest.mark.workers, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture
def steps_kind() -> Iterator[kinds.JobKind]:
    """Register a kind run by the django.tasks task ``with_progress``."""
    kind = kinds.register(
        kinds.JobKind(name="steps", label="Steps", task=tasks.with_progress, content_types=("text/plain",))
    )
    yield kind
    kinds.unregister(kind.name)


def test_a_django_tasks_job_moves_its_progress_bar_and_ends_with_its_result(
    client_alice, alice, start_worker, steps_kind
):
    start_worker("default")
    job = Job.objects.create(owner=alice, kind="steps", task_key="job:steps", filename="steps.txt")
    # As jobs.services.job_start does: the job's key, through the task's own using().
    call = steps_kind.task.using(key=job.task_key).enqueue(name="steps", steps=4, step_seconds=0.5)

    seen: list[float] = []

    def state() -> dict:
        body = client_alice.get(f"/api/jobs/{job.id}").json()
        seen.append(body["progress"]["fraction"] or 0.0)
        return body

    wait_until(lambda: state()["final"], 60, "the job to finish")
    final = state()
    assert final["status"] == "succeeded"
    assert tasks.with_progress.get_result(call.id).return_value == 4
    assert any(0 < fraction < 1 for fraction in seen), seen  # the bar moved before the end
    assert seen == sorted(seen)
    assert final["progress"]["fraction"] == 1.0
    assert final["attempts"]["max"] == steps_kind.idempotent_task.get_max_attempts()
