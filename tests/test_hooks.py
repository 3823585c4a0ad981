"""The hooks: values that would bake a broken project are refused by name; good ones bake a project that parses."""

from __future__ import annotations

import pytest

from .conftest import bake_into


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Acme & Co", "acme_co"),
        ("  Acme -- Jobs!  ", "acme_jobs"),
        ("3D Prints", "project_3d_prints"),
        ("Café Olé", "cafe_ole"),
        ("Acme.Jobs_v2", "acme_jobs_v2"),
    ],
)
def test_the_derived_slug_is_an_identifier(name, slug, tmp_path):
    assert bake_into(tmp_path, project_name=name).name == slug
