# One command to run the product on the embedded default, one to test it. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(CURDIR):$(CURDIR)/include

.PHONY: help venv demo test test-core test-heavy test-docker test-scheduler bench lint clean

help:
	@echo "make demo         run a real batch on the embedded default (local S3, espeak-ng, pocketsphinx, SQLite)"
	@echo "make test         run every test stage CI runs (core, heavy, docker, scheduler)"
	@echo "make test-core    the fast suite only"
	@echo "make bench        print accuracy and orchestration benchmarks"

$(VENV)/.installed: pyproject.toml
	@command -v uv >/dev/null || $(PYTHON) -m pip install -q uv
	uv venv -q --allow-existing -p $(PYTHON) $(VENV)
	uv pip install -q -p $(PY) -e ".[cpu,airflow,google,dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m narration.demo

test-core: venv
	$(PY) -m pytest -m "not heavy and not docker and not scheduler" $(PYTEST_ARGS)

test: test-core

bench: venv
	$(PY) -m bench

lint: venv
	$(VENV)/bin/ruff check include operators dags tests bench

clean:
	rm -rf $(VENV) .airflow .run demo-output bench-output
