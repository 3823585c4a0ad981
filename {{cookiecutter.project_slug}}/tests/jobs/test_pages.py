"""The pages ask for no favicon, so the local stack logs no 404 for one on every page."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_pages_ask_for_no_favicon_and_favicon_ico_is_no_404():
    # Every page of the jobs app says it has no icon; the admin's pages ask /favicon.ico, which answers 204.
    assert b'<link rel="icon" href="data:,">' in Client().get("/accounts/login/").content
    assert Client().get("/favicon.ico").status_code == 204
