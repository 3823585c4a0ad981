# Two commands: `make demo` bakes the default project into build/demo and starts its stack,
# `make test` runs the template's tests (which run the generated project's own `make test`).
SHELL := /bin/sh
TEMPLATE_DIR := {{cookiecutter.project_slug}}
PYTHON_FOUND := $(shell "./$(TEMPLATE_DIR)/scripts/find-python")
ifneq ($(PYTHON_FOUND),)
export UV_PYTHON ?= $(PYTHON_FOUND)
endif
DEMO_DIR ?= build/demo
BENCH_DIR ?= build/bench

.PHONY: test demo bench lint relock uv

uv:
	@command -v uv >/dev/null || { echo "uv is required: pip install uv"; exit 1; }

## Bake every option combination, lint each, check the hooks, and run the default bake's `make test`.
test: uv
	uv run --locked ruff check tests hooks local_extensions.py
	uv run --locked ruff format --check tests hooks local_extensions.py
	uv run --locked pytest -v tests

## Bake the default project into $(DEMO_DIR) (reusing its .env and .venv) and run `make dev` there.
demo: uv
	uv run --locked cookiecutter --no-input --overwrite-if-exists -o "$(DEMO_DIR)" .
	$(MAKE) -C "$(DEMO_DIR)/proj" dev

## Bake the default project into $(BENCH_DIR), run its benchmarks, and write bench/results.md here.
bench: uv
	uv run --locked cookiecutter --no-input --overwrite-if-exists -o "$(BENCH_DIR)" .
	$(MAKE) -C "$(BENCH_DIR)/proj" bench BENCH_OUT="$(CURDIR)/bench/results.md"

lint: uv
	uv run --locked ruff check tests hooks local_extensions.py
	uv run --locked ruff format --check tests hooks local_extensions.py

## Re-resolve the generated project's uv.lock after editing its pyproject.toml.
relock:
	./scripts/relock
