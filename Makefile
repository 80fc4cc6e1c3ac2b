# dagforge: `make demo` runs every example pipeline end to end on local servers; `make test` runs the suite.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP  := $(VENV)/.installed
EMULATORS := .venv-emulators
EMULATORS_STAMP := $(EMULATORS)/.installed
DBT_VENV := .venv-dbt
DBT_STAMP := $(DBT_VENV)/.installed

export AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY := False
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export DO_NOT_TRACK := 1
export AIRFLOW__CORE__LOAD_EXAMPLES := False

BASE   ?=
REVIEW_OUT ?= /dev/stdout

.PHONY: install demo airflow browser redis test test-unit test-integration test-faults test-e2e lint format bench lock clean review

# Bytecode is compiled at install (uv --compile-bytecode, and compileall for this repository's own
# code): where PYTHONDONTWRITEBYTECODE=1 (many containers, and CI), every process would otherwise
# compile ~1,300 modules from source. compileall skips files whose bytecode is current.
install: $(STAMP) $(EMULATORS_STAMP) $(DBT_STAMP)
	$(BIN)/python -m compileall -q -j 0 dagforge operators dags

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# The GCS and BigQuery emulators live in a virtualenv of their own (their pins clash with Airflow's).
$(EMULATORS_STAMP): requirements-emulators.txt $(STAMP)
	test -x $(EMULATORS)/bin/python || $(PYTHON) -m venv $(EMULATORS)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(EMULATORS)/bin/python -r requirements-emulators.txt
	touch $(EMULATORS_STAMP)

# dbt and its adapters in a virtualenv of their own (their pins clash with Airflow's; docs/decisions/0016).
# --no-build: wheels only (a source build of dbt's parser would download from GitHub).
$(DBT_STAMP): requirements-dbt.txt $(STAMP)
	test -x $(DBT_VENV)/bin/python || $(PYTHON) -m venv $(DBT_VENV)
	$(BIN)/uv pip install --quiet --compile-bytecode --no-build --python $(DBT_VENV)/bin/python -r requirements-dbt.txt
	touch $(DBT_STAMP)

demo: install
	$(BIN)/python -m dagforge.demo

# make airflow CELERY=1: the CeleryExecutor with a local Redis and two workers
airflow: install $(if $(CELERY),redis)
	$(BIN)/python -m dagforge.localairflow $(if $(CELERY),--celery)

# Debian's Chromium for the end-to-end test's screenshots (installed when missing, as root).
browser:
	@command -v chromium >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "install Debian's chromium package (root needed)"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's Redis for the Celery test (the broker of a CeleryExecutor with two workers), when missing.
redis:
	@command -v redis-server >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "install Debian's redis-server package (root needed)"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

test: install lint browser redis
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m "not integration and not faults and not e2e"

test-integration: install
	$(BIN)/python -m pytest -m integration

test-faults: install
	$(BIN)/python -m pytest -m faults

test-e2e: install browser redis
	$(BIN)/python -m pytest -m e2e

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/pg_to_pg.py

# What CI posts on a pull request: every pipeline validated, then the plan diff against BASE
# (default: the merge base with origin/main, else HEAD) as markdown, written to REVIEW_OUT.
review: install
	$(BIN)/dagforge validate pipelines
	$(BIN)/dagforge diff $(BASE) --format markdown >> $(REVIEW_OUT)

# Re-pin every package after editing requirements.in.
lock: install
	$(BIN)/uv pip compile requirements.in -o requirements.txt --python-version 3.11 --quiet
	$(BIN)/uv pip compile requirements-emulators.in -o requirements-emulators.txt --python-version 3.11 --quiet
	$(BIN)/uv pip compile requirements-dbt.in -o requirements-dbt.txt --python-version 3.11 --no-build --quiet

clean:
	rm -rf $(VENV) $(EMULATORS) $(DBT_VENV) .airflow .dagforge .pytest_cache .ruff_cache
