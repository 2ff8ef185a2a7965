# The two commands of the README: `make up` runs the whole system, `make test` the tests.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
API_PORT ?= 8000

.PHONY: up test install services migrate seed lint typecheck check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install sagaway with its dev tools and the bench extra

services: ## start PostgreSQL and RabbitMQ, installing them first on Debian if missing
	./scripts/ensure-services.sh

migrate: install services
	$(BIN)/sagaway migrate

seed: migrate
	$(BIN)/sagaway seed

up: seed ## install, check services, migrate, seed, then run every component
	$(BIN)/sagaway up --api-port $(API_PORT)

test: install services ## every test tier against the real PostgreSQL and RabbitMQ
	./scripts/ensure-chromium.sh
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/artifacts
