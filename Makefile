# One entry point for the environment, the main job and the tests.
#   make demo   build .venv if needed, then run the main job (the scaling-transfer study:
#               source cls, targets cls_pit det video, 3 seeds, every rule at each task's FLOPs)
#   make demo-all  the same with every shape rule and onnxruntime latency too (longer)
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

SHAPES := deep_narrow wide_shallow bigpatch_hires smallpatch_lowres mlp2 mlp6 heads1 heads4
demo-all: env
	$(PY) tools/transfer.py --workers 2 --latency-backends eager onnxruntime --rules \
	  $(foreach r,search_proxy_top1 search_deeper_lowres $(addprefix shape_,$(SHAPES)),\
	  configs/_base_/scaling/$(r).py) --out-dir work_dirs/transfer_all

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
