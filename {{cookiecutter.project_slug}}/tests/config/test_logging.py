"""What the local stack logs: no warning a user reads as trouble, and every other warning still shown."""

from __future__ import annotations

import pytest

from {{ cookiecutter.project_slug }}.core.logfilters import DropMessages

from tests.config.test_settings import PACKAGE, run_django

#: Describes a connection as every worker, beat and Flower do at start, then logs another kombu warning.
DESCRIBE_CONNECTIONS = """
import logging
import django
django.setup()
from django.conf import settings
from kombu import Connection
Connection(settings.CELERY_BROKER_URL).info()
Connection("redis://").info()
logging.getLogger("kombu.connection").warning("another kombu warning")
"""


def test_kombu_says_nothing_of_the_filesystem_brokers_missing_host_and_keeps_the_rest(tmp_path):
    done = run_django(["-c", DESCRIBE_CONNECTIONS], f"{PACKAGE}.config.settings.local", {"RUN_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "No hostname was supplied" not in done.stderr, done.stderr
    assert "WARNING kombu.connection another kombu warning" in done.stderr, done.stderr


def test_on_redis_kombu_still_warns_of_a_url_without_a_host(tmp_path):
    env = {"RUN_DIR": str(tmp_path), "CELERY_BROKER_URL": "redis://"}
    done = run_django(["-c", DESCRIBE_CONNECTIONS], f"{PACKAGE}.config.settings.local", env)
    assert done.returncode == 0, done.stderr
    assert "WARNING kombu.connection No hostname was supplied. Reverting to default 'localhost'" in done.stderr


def test_drop_messages_refuses_an_empty_prefix():
    with pytest.raises(ValueError, match=r"non-empty message prefixes, got \[''\]"):
        DropMessages([""])
