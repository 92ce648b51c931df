# One place defines the README's commands; .ci/run calls `make test`.
PY ?= python3

.PHONY: setup demo test lint

setup:
	bash scripts/setup.sh

demo: setup
	samu-st prepare mini --out runs/demo/mini-covost

test: setup
	$(PY) -m pytest -x -q tests

lint:
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks
	mypy
