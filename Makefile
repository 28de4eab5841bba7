# The two commands a new user needs: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test compat services collector tools autoinstrumentation lint stack bench fleet-sizing faults clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the example app under opentelemetry-instrument (SQLite, metrics on :9464, app on :8000).
demo: install
	bash scripts/demo.sh

## Lint first (ruff, ruff format, mypy: CI runs only `make test`), then install and start what the tests need
## (PostgreSQL, Prometheus, the collector, VictoriaMetrics, Helm), run the version matrix's two cells and every test,
## then `make compat`.
test: lint services collector tools matrix-ci
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(BIN)/python scripts/compat.py

## SQLAlchemy's and circuitbreaker's own test suites (their sdists, cached outside the clone), plain and under
## opentelemetry-instrument: fails on any test whose outcome differs.
compat: install services
	$(BIN)/python scripts/compat.py

## PostgreSQL, wrk and Chromium from Debian's packages (installed when missing; tests start their own instances).
services:
	bash scripts/test-services.sh

## The OpenTelemetry Collector built with ocb from collector-config/builder-config.yaml (cached outside the clone).
collector:
	bash scripts/build-collector.sh

## Prometheus 3 + promtool, VictoriaMetrics and Helm built from the Go module proxy (cached outside the clone).
tools:
	bash scripts/build-tools.sh

## What deploy/operator/Dockerfile puts in the Operator's image, without Docker: otel-reliability and everything it
## needs in one directory (for this Python's minor), to be copied and put on PYTHONPATH as the Operator does.
AUTOINSTRUMENTATION ?= build/autoinstrumentation
autoinstrumentation: install
	rm -rf $(AUTOINSTRUMENTATION)
	$(BIN)/python -m pip install -q --target $(AUTOINSTRUMENTATION) .

## The collector and Prometheus on loopback with collector-config/ (next to `make demo`), until Ctrl-C.
stack: install services collector
	bash scripts/stack.sh

## Side-by-side benchmarks (wrk on loopback); rewrites benchmarks/RESULTS.md.
bench: install
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/run.py

## Series per app instance and one gateway collector's throughput (~2 min); rewrites benchmarks/FLEET.md.
fleet-sizing: install services collector
	$(BIN)/python benchmarks/fleet_sizing.py

## The fault suite at full length (PostgreSQL stopped 5 s, collector down 15 s, flapping breakers, a 10-minute
## soak, ...; about 15 minutes); rewrites benchmarks/FAULTS.md. Short versions run in `make test`.
faults: install services collector
	$(BIN)/python benchmarks/faults.py

## The version matrix (noxfile.py): the oldest and newest of every declared range on the oldest and newest Python
## here. Venvs are cached outside the clone, keyed by pyproject.toml and noxfile.py; one run at a time per machine.
MATRIX_CACHE := $(or $(OTEL_RELIABILITY_CACHE),/var/cache/otel-reliability)/matrix
MATRIX_TOOLS := $(MATRIX_CACHE)/tools-uv0.13.9-nox2026.10.20
MATRIX_KEY    = $(shell cat pyproject.toml noxfile.py | sha256sum | cut -c1-12)
NOX           = PATH="$(MATRIX_TOOLS)/bin:$$PATH" UV_CACHE_DIR=$(MATRIX_CACHE)/uv-cache \
                flock $(MATRIX_CACHE)/.lock $(MATRIX_TOOLS)/bin/nox --envdir $(MATRIX_CACHE)/nox-$(MATRIX_KEY)

$(MATRIX_TOOLS)/.installed:
	mkdir -p $(MATRIX_CACHE)
	$(PYTHON) -m venv $(MATRIX_TOOLS)
	$(MATRIX_TOOLS)/bin/python -m pip install -q uv==0.13.9 nox==2026.10.20
	touch $@

## Two cells (part of `make test`): everything oldest on the oldest Python, everything newest on the newest.
matrix-ci: $(MATRIX_TOOLS)/.installed
	$(NOX) -s ci

## All cells: {oldest, newest Python} x {lowest, highest, SQLAlchemy 1.4}.
matrix: $(MATRIX_TOOLS)/.installed
	$(NOX) -s matrix

## ruff check, ruff format --check and mypy; the first step of `make test`.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build .pytest_cache
