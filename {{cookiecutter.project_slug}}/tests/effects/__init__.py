"""A test-only app whose table counts side effects, so tests can prove 'exactly once'."""
