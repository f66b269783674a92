# Switch: `make run` starts a hub on this machine; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
export SWITCH_JWT_SECRET ?= dev-secret-change-me
export SWITCH_DATABASE_URL ?= sqlite://switch.db
export SWITCH_REDIS_URL ?= redis://127.0.0.1:6379

.PHONY: build run token test test-deps test-rust test-sdk-python test-sdk-js test-compose test-browser test-schema screenshots bench bench-micro fmt lint clean

build:
	$(CARGO) build --release

## Build, migrate, start the server and one worker on SQLite against the local Redis.
run: build
	@echo "Switch listening on http://127.0.0.1:8080 (SQLite at $(SWITCH_DATABASE_URL), Redis at $(SWITCH_REDIS_URL))"
	@echo "Dev token (admin + publish, 30 days):"
	@echo "  export TOKEN=$$(target/release/switch-server --print-dev-token)   # or: export TOKEN=\$$(make -s token)"
	@echo "API reference (try requests with the token): http://127.0.0.1:8080/docs"
	@echo "Try:  curl -X POST localhost:8080/publish -H \"Authorization: Bearer \$$TOKEN\" -d '{\"topic\": \"orders.created\", \"body\": {\"id\": 42}}'"
	@trap 'trap - INT TERM EXIT; kill 0' INT TERM EXIT; \
	  target/release/switch-server & \
	  for i in $$(seq 1 100); do curl -fsS localhost:8080/ping >/dev/null 2>&1 && break; sleep 0.1; done; \
	  target/release/switch-worker & \
	  wait

## An admin + publish token for the hub `make run` starts (signed with SWITCH_JWT_SECRET).
token:
	@target/release/switch-server --print-dev-token

## Python virtualenvs for the legacy SDK test, the Python SDK and the compose check.
test-deps: .venv-switcher/.ok .venv-sdk/.ok

.venv-switcher/.ok:
	$(PYTHON) -m venv .venv-switcher
	.venv-switcher/bin/pip install -q switcher==0.1.8
	touch $@

.venv-sdk/.ok: sdk-python/pyproject.toml Makefile
	$(PYTHON) -m venv .venv-sdk
	.venv-sdk/bin/pip install -q -e './sdk-python[test]' pyyaml standardwebhooks prometheus-client
	touch $@

test: test-deps test-rust test-sdk-python test-sdk-js test-compose test-browser test-schema

test-rust:
	$(CARGO) build --workspace --bins
	SWITCHER_PYTHON=$(CURDIR)/.venv-switcher/bin/python $(CARGO) test --workspace

test-sdk-python: test-deps
	$(CARGO) build --workspace --bins
	scripts/with-hub.sh -- .venv-sdk/bin/python -m pytest -q sdk-python/tests tests/test_signature_interop.py tests/test_metrics.py

test-sdk-js:
	$(CARGO) build --workspace --bins
	scripts/with-hub.sh -- bash -c 'cd sdk-js && node --test test/'

test-compose: test-deps
	.venv-sdk/bin/python -m pytest -q tests/compose_check.py

## The dashboard in headless Chromium (Debian's chromium and chromium-driver)
## against a server and a worker of their own; screenshots in target/browser-screenshots.
.venv-browser/.ok: Makefile
	$(PYTHON) -m venv .venv-browser
	.venv-browser/bin/pip install -q 'selenium>=4.11,<5' pytest
	touch $@

test-browser: .venv-browser/.ok
	$(CARGO) build -p switch-server -p switch-worker -p switch-cli --bins
	timeout 600 .venv-browser/bin/python -m pytest -q tests/browser

## The README's dashboard screenshots (docs/screenshots), taken by the browser test.
screenshots: .venv-browser/.ok
	$(CARGO) build -p switch-server -p switch-worker -p switch-cli --bins
	SWITCH_SCREENSHOT_DIR=$(CURDIR)/docs/screenshots .venv-browser/bin/python -m pytest -q tests/browser

## schemathesis, pinned, in a virtualenv of its own.
SCHEMATHESIS_VERSION := 4.32.5
.venv-schema/.ok: Makefile
	$(PYTHON) -m venv .venv-schema
	.venv-schema/bin/pip install -q schemathesis==$(SCHEMATHESIS_VERSION)
	touch $@

## A running server against its own OpenAPI document: requests generated from
## the document (valid and invalid, a fixed seed, at most 50 per operation)
## must get no 5xx and only the statuses, content types and bodies it
## documents. No worker runs: the fuzzer's subscribers have made-up target
## URLs, and nothing must be delivered to them. Per-operation settings:
## tests/schema/schemathesis.toml.
test-schema: .venv-schema/.ok
	$(CARGO) build -p switch-server --bins
	scripts/with-hub.sh --no-worker -- tests/schema/run.sh

## The whole hub on this machine: bench/results/results.{md,json}, the
## message log's figures in bench/results/log.{md,json}, and partitions, a
## Redis Cluster and bytes per job in bench/results/scale.{md,json}.
bench: build
	bench/run.sh
	bench/log.sh
	$(PYTHON) bench/scale.py

## criterion micro-benchmarks: filter evaluation and topic matching.
bench-micro:
	$(CARGO) bench -p switch-bench --bench filters

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .venv-switcher .venv-sdk .venv-browser .venv-schema
