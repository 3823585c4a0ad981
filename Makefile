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

.PHONY: test demo demo-bake bench lint relock uv

uv:
	@command -v uv >/dev/null || { echo "uv is required: pip install uv"; exit 1; }

## Bake every option combination, lint each, check the hooks, and run the default bake's `make test`.
test: uv
	uv run --locked ruff check tests hooks local_extensions.py
	uv run --locked ruff format --check tests hooks local_extensions.py
	uv run --locked pytest -v tests

## Bake the default project into $(DEMO_DIR) (reusing its .env and .venv) and run `make dev` there;
## refuses to bake over a copy that differs from a fresh bake (your edits): DEMO_OVERWRITE=1 bakes over it.
demo: demo-bake
	$(MAKE) -C "$(DEMO_DIR)/proj" dev

# What a bake never writes, or writes anew each time: the copy's own secrets, environment, data and caches.
DEMO_OWN := .env .venv run __pycache__ .pytest_cache .mypy_cache .ruff_cache

demo-bake: uv
	@if [ -d "$(DEMO_DIR)/proj" ] && [ -z "$(DEMO_OVERWRITE)" ]; then \
		fresh=$$(mktemp -d) && trap 'rm -rf "$$fresh"' EXIT && \
		uv run --locked cookiecutter --no-input -o "$$fresh" . >/dev/null && \
		changed=$$(diff -rq $(DEMO_OWN:%=-x %) "$$fresh/proj" "$(DEMO_DIR)/proj" | sed "s|$$fresh/proj|fresh bake|g"); \
		if [ -n "$$changed" ]; then \
			echo "$(DEMO_DIR)/proj differs from a fresh bake of this template (your edits, or the template's):"; \
			echo "$$changed" | head -20; \
			echo "Run it as it is: make -C $(DEMO_DIR)/proj dev. Bake over it: make demo DEMO_OVERWRITE=1"; \
			exit 1; \
		fi; \
	fi
	uv run --locked cookiecutter --no-input --overwrite-if-exists -o "$(DEMO_DIR)" .

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
