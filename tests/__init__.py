"""Tests of the template: bake, lint, and run the generated project's own tests."""
