"""The jobs API's tests register job kinds of their own, so they pass with or without the demo app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from {{ cookiecutter.project_slug }}.jobs import kinds

from tests.tasks import jobs as tasks

#: The kinds the jobs tests start: a text file's lines, and a small picture.
LINES = kinds.JobKind(
    name="lines",
    label="Lines of a text file",
    task=tasks.count_lines,
    content_types=("text/csv", "text/plain"),
    extensions=(".csv", ".txt"),
)
PICTURE = kinds.JobKind(
    name="picture", label="A picture", task=tasks.measure_picture, content_types=("image/png",), max_upload_bytes=4096
)


@pytest.fixture(autouse=True)
def test_kinds() -> Iterator[tuple[kinds.JobKind, ...]]:
    """Register the test kinds for one test."""
    for kind in (LINES, PICTURE):
        kinds.register(kind)
    yield (LINES, PICTURE)
    for kind in (LINES, PICTURE):
        kinds.unregister(kind.name)


@pytest.fixture
def alice(django_user_model):
    """Return a signed-up user of the jobs API."""
    return django_user_model.objects.create_user("alice", "alice@example.com", "alice-password")


@pytest.fixture
def client_alice(alice) -> Client:
    """Return a test client signed in as ``alice``."""
    client = Client()
    client.force_login(alice)
    return client
