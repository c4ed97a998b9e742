# One entry point for the environment, the main job and the tests.
#   make demo   build .venv if needed, then run the main job on embedded defaults
#   make test   build .venv if needed, then run the whole test suite
#   make env    build / verify .venv only
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env demo test lint
env:
	@VENV=$(abspath $(VENV)) bash tools/setup_env.sh

demo: env
	$(PY) tools/analysis/scaling_table.py

test: env
	$(PY) -m pytest -q tests

lint:
	$(PY) -m flake8 mmvitscale tools tests benchmarks
