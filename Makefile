# Chancery — every developer and CI entry point. `make run` and `make test` do all set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := shared deploy services/identity services/orders services/ca-signer services/ledger services/audit
STAMP := $(VENV)/.chancery-installed
DEV_STAMP := $(VENV)/.chancery-dev-installed

.PHONY: help venv dev-venv system-packages run up down status test test-stress test-unit test-e2e lint compose lock clean bench-crl bench-signer bench-ledger bench-audit bench-relay bench-revocation chaos bench

help:
	@echo "make run     - embedded Chancery on http://127.0.0.1:$${CHANCERY_PORT:-8080} (SQLite, in-memory bus)"
	@echo "make test    - install what is missing, then unit, embedded and distributed tests"
	@echo "make up/down - the distributed stack on this machine (RabbitMQ, PostgreSQL, gunicorn, nginx)"
	@echo "make lint    - ruff"

# The runtime (`make run`, `make up`): requirements.lock and this repository's packages.
# pip's own lines are the progress; the warm-cache install takes about 20 s.
$(STAMP): requirements.lock $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@test -x $(BIN)/python || { echo "==> creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> installing the runtime ($$(grep -c '==' requirements.lock) pinned packages from requirements.lock)"
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -r requirements.lock
	@echo "==> installing Chancery's own packages (editable)"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation $(foreach p,$(PACKAGES),-e $(p))
	@touch $@

# Tests, linting and benchmarks add requirements-dev.lock (same versions, more packages).
$(DEV_STAMP): $(STAMP) requirements-dev.lock
	@echo "==> installing test and benchmark tools (requirements-dev.lock)"
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -r requirements-dev.lock
	@touch $@

venv: $(STAMP)

dev-venv: $(DEV_STAMP)

# Debian packages for the distributed mode and its tests (root only; a no-op when present).
system-packages:
	@bash deploy/install-system-packages.sh

run: venv
	$(BIN)/chancery embedded

# SIGNERS=N starts N ca-signer workers competing for the signing queue (default 2).
up: venv system-packages
	$(BIN)/chancery-stack up $(if $(SIGNERS),--signer-workers $(SIGNERS))

down:
	$(BIN)/chancery-stack down

status:
	$(BIN)/chancery-stack status

test: dev-venv system-packages
	$(BIN)/python -m pytest

# The modules that failed only on a busy machine, in the order that once made them fail
# (the embedded stack first), RUNS times (3) while spinners keep every CPU busy.
STRESS_MODULES := tests/e2e/test_ca_chain.py shared/tests/test_relay_confirms.py \
	shared/tests/test_messaging.py services/orders/tests/test_validation.py \
	tests/e2e/test_readme.py tests/e2e/test_walking_skeleton.py
test-stress: dev-venv system-packages
	$(BIN)/python tests/under_load.py --runs $${RUNS:-3} -- -q -p no:cacheprovider $(STRESS_MODULES)

test-unit: dev-venv
	$(BIN)/python -m pytest -m "not e2e"

# Benchmarks print numbers and ratios against a baseline measured in the same run.
# End to end through the gateway of the distributed stack (free ports, destroyed at the end):
# certificates per second and latency at saturation and at a sustained rate, CPU per
# component, ratio to raw signing; JSON and PNG in var/bench/. About 4 minutes.
bench: dev-venv system-packages
	$(BIN)/python bench/bench_e2e.py

bench-crl: dev-venv
	$(BIN)/python services/ca-signer/bench_crl.py

# Starts RabbitMQ and PostgreSQL on free ports for the run (stopped at the end); about 2-3 minutes.
bench-signer: dev-venv system-packages
	$(BIN)/python services/ca-signer/bench_signer.py

# Seeds 1,000,000 audit entries in a throw-away PostgreSQL (free port, stopped at the end), then
# times filtered pages per role; 8-12 minutes on a loaded 2-CPU box.
bench-audit: dev-venv system-packages
	$(BIN)/python services/audit/bench_audit.py

# Reservations per second and p99, on one account and spread over many, on PostgreSQL
# (started on a free port for the run, stopped at the end) and SQLite; about a minute.
bench-ledger: dev-venv system-packages
	$(BIN)/python services/ledger/bench_ledger.py

# Outbox relay messages/s and CPU per message, one broker confirm per message (the old path)
# against one wait per batch, in the same run, on RabbitMQ and PostgreSQL started on free
# ports for the run (stopped at the end); 5,000 messages a run, about 1-2 minutes.
bench-relay: dev-venv system-packages
	$(BIN)/python shared/bench_relay.py

# Deactivation → refusal by orders through the gateway of the distributed stack (both
# gunicorn workers), 20 samples; median, p95, max. About a minute.
bench-revocation: dev-venv system-packages
	$(BIN)/python bench/bench_revocation.py

# Fault runs on their own distributed stack: 500 orders while RabbitMQ, a signer worker,
# PostgreSQL and the orders relay are killed and restarted; also part of `make test`.
chaos: dev-venv system-packages
	$(BIN)/python -m pytest tests/chaos

lint: dev-venv
	$(BIN)/ruff check .

compose: venv
	$(BIN)/chancery-stack compose > docker-compose.yml

# Both locks from the .in files: the runtime alone, then the development tools on top,
# constrained to the runtime's versions so the two never disagree.
lock:
	rm -rf /tmp/chancery-lock && $(PYTHON) -m venv /tmp/chancery-lock
	/tmp/chancery-lock/bin/pip install --quiet -r requirements.in
	/tmp/chancery-lock/bin/pip freeze --all | grep -v '^pip==' > requirements.lock
	rm -rf /tmp/chancery-lock && $(PYTHON) -m venv /tmp/chancery-lock
	/tmp/chancery-lock/bin/pip install --quiet -r requirements-dev.in -c requirements.lock
	/tmp/chancery-lock/bin/pip freeze --all | grep -v '^pip==' > requirements-dev.lock
	rm -rf /tmp/chancery-lock

clean:
	rm -rf $(VENV) var
