# mmfeat: `make demo` runs the main job on the embedded default services; `make test` runs the suite.
# Both do all their own set-up. Slow things are cached under $(CACHE) and shared by every checkout:
# the virtualenv (torch alone is several GB), the Kafka jars, the Triton backend folder.
SHELL := /bin/bash
PYTHON ?= python3.11
CACHE ?= $(HOME)/.cache/mmfeat
VENV := $(CACHE)/venv
PY := $(VENV)/bin/python
LOCK_HASH := $(shell sha256sum requirements.lock | cut -c1-16)
STAMP := $(VENV)/.lock-$(LOCK_HASH)
export MMFEAT_CACHE_DIR := $(CACHE)
export PYTHONPATH := $(CURDIR)

.PHONY: venv sysdeps setup test test-unit test-integration demo deploy-check compose-test lint bench up down clean

venv: $(STAMP) .venv

$(STAMP): requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	@rm -f $(VENV)/.lock-* && touch $@

.venv:
	ln -sfn $(VENV) .venv

# Java 17 + Maven fetch and run the broker; openclipart-png is the demo's, the captioner's and the tests' real images;
# espeak-ng speaks the tests' sentences and DejaVu draws their on-screen text.
sysdeps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	test -d /usr/share/openclipart/png || missing="$$missing openclipart-png"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	test -d /usr/share/fonts/truetype/dejavu || missing="$$missing fonts-dejavu-core"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

setup: venv sysdeps
	@$(PY) -c "from mmfeat.cli.services import kafka_libs; from pathlib import Path; kafka_libs(Path('$(CACHE)'))"

test: setup
	$(PY) -m pytest tests

test-unit: venv
	$(PY) -m pytest tests/unit

test-integration: setup
	$(PY) -m pytest tests/integration

demo: setup
	$(PY) -m mmfeat demo

# every static validation of deploy/: the chart per values file through kubeconform, Prometheus config and rules,
# the compose file
deploy-check: venv sysdeps
	$(PY) deploy/check.py

# the compose stack for real on this machine's Docker daemon (images built offline and cached; docs/deploy.md)
compose-test: setup
	$(PY) deploy/compose_test.py

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy mmfeat captioner readers workers bench streams ranking
	$(PY) -m mypy triton_models/captioner/1/model.py
	$(PY) -m mypy triton_models/ocr/1/model.py
	$(PY) -m mypy triton_models/asr/1/model.py
	$(PY) -m mypy bench/triton_models/null_captioner/1/model.py
	$(PY) -m mypy deploy/check.py deploy/compose_test.py

bench: setup
	$(PY) -m mmfeat bench worker
	$(PY) -m mmfeat bench captioner
	$(PY) -m mmfeat bench profiles
	$(PY) -m mmfeat bench backfill
	$(PY) -m mmfeat bench ranker

up: setup
	$(PY) -m mmfeat up

down:
	$(PY) -m mmfeat down

clean:
	-$(PY) -m mmfeat down
	rm -rf .mmfeat models .pytest_cache .mypy_cache .ruff_cache
