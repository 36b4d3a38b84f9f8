# AI Telemetry developer commands. `make` alone lists them.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
# Extra pytest arguments for `make test`, e.g. make test ARGS="-k settings -x"
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test verify bench lint clean

help: ## List the targets
	@echo "Usage: make <target>"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## Create .venv and install the project (editable, with dev tools)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

demo: install ## Run the product on the embedded default (SQLite, simulated fleet, local auth)
	$(VENV)/bin/ai-telemetry demo

test: ## Lint and run the tests, installing what they need (ARGS="..." goes to pytest)
	PYTHON=$(PYTHON) scripts/test $(ARGS)

verify: ## Reliability suite: load, faults, bad input, security; updates docs/reliability.md
	PYTHON=$(PYTHON) scripts/verify $(ARGS)

bench: install ## Run the benchmarks
	$(VENV)/bin/python -m benchmarks

lint: install ## ruff check, ruff format --check and mypy (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m mypy

clean: ## Remove var/ and caches (keeps .venv)
	rm -rf var .pytest_cache .ruff_cache .mypy_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

.PHONY: deploy-manifests
deploy-manifests: install ## Regenerate deploy/components/alerting/ from alertmanager/
	$(VENV)/bin/python deploy/generate.py
