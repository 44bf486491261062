# Two commands matter: `make demo` (main job on the synthetic dataset) and `make test` (the suite).
# Both set up .venv themselves on a fresh machine; `make setup` is idempotent (stamp file).
PYTHON_BOOTSTRAP ?= python3.11
VENV ?= .venv
# e.g. VENV_ARGS=--system-site-packages to reuse a system-wide Detectron2 (and its torch).
VENV_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.iai_d2_setup_done
DEMO_DIR ?= output/demo
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets
export PYTHONUNBUFFERED := 1

.PHONY: setup test demo clean-demo

setup: $(STAMP)

$(STAMP): requirements.txt setup.py tools/install_deps.sh tools/install_chromium.sh
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV_ARGS) $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	bash tools/install_deps.sh $(PY)
	bash tools/install_chromium.sh
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

demo: setup
	bash tools/run_demo.sh $(PY) $(DEMO_DIR)

clean-demo:
	rm -rf $(DEMO_DIR)
