# One entry point for the environment, the main job and the tests.
#   make demo   build .venv if needed, then run the main job (the scaling-transfer report)
#   make demo-all  the main job with the det and video targets too (not timed yet)
#   make test   build .venv if needed, then run the whole test suite
#   make env    build / verify .venv only
#   make docs   build the documentation (Sphinx + MyST, requirements/docs.txt) into docs/_build/html
#   make table  cost table of ViT presets and scaled variants (params, FLOPs, CPU latency)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env demo demo-all test lint table docs
env:
	@VENV=$(abspath $(VENV)) bash tools/setup_env.sh

demo: env
	$(PY) tools/transfer.py --workers 2

demo-all: env
	$(PY) tools/transfer.py --workers 2 --tasks cls cls_pit det video

table: env
	$(PY) tools/analysis/scaling_table.py

test: env
	$(PY) -m pytest -q tests

docs: env
	$(PY) -m pip install -q -r requirements/docs.txt -c requirements/constraints.txt
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

lint:
	$(PY) -m flake8 mmvitscale tools tests benchmarks mmvitscale_mmengine_hook.py setup.py
