# One place defines the README's commands; .ci/run calls `make test`.
PY ?= python3

.PHONY: setup demo test lint

setup:
	PYTHON=$(PY) bash scripts/setup.sh

demo: setup
	$(PY) -m samu_st demo --out runs/demo

test: setup
	$(PY) -m pytest -x tests

lint:
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks
	mypy
