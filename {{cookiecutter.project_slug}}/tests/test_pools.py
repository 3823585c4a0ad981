"""The worker-pool registry refuses a pool it cannot run as written, naming the value."""

from __future__ import annotations

import pytest

from {{ cookiecutter.project_slug }} import pools


def test_max_memory_per_child_is_kib_on_a_prefork_pool():
    assert pools.IMAGES.max_memory_per_child == 512 * 1024
    pool = pools.Pool(name="big", purpose="big files", max_memory_per_child=2048)
    assert pool.max_memory_per_child == 2048


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool": "threads", "max_memory_per_child": 4096}, r"max_memory_per_child \(4096\) needs a prefork pool"),
        ({"max_memory_per_child": 512}, r"max_memory_per_child \(512\) is in KiB and must be at least 1024"),
        ({"max_memory_per_child": "512MB"}, r"max_memory_per_child \('512MB'\) must be a whole number of KiB"),
        ({"max_memory_per_child": True}, r"max_memory_per_child \(True\) must be a whole number of KiB"),
    ],
)
def test_bad_max_memory_per_child_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        pools.Pool(name="bad", purpose="bad", **options)


def test_shortened_pools_keep_the_atomic_effects_choice_of_their_own_limits():
    short = pools.scaled(pools.POOLS, {"reports": (8, 10), "default": (4, 6)})
    # The test settings shorten every limit: the reports pool must still commit its body's writes as they happen.
    assert not pools.by_queue("reports", short).runs_atomic_effects
    assert pools.by_queue("default", short).runs_atomic_effects
