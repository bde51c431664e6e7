# Arena — the two commands a fresh Debian 12 machine (as root) needs:
#   make demo   set up, run the example algorithm on demo cases, serve the leaderboard
#   make test   set up, run the test suite
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: setup demo test test-sqlite test-fast

setup:
	bash scripts/setup.sh

demo: setup
	arena demo

POSTGRES_URL ?= postgresql+psycopg://arena:arena@127.0.0.1:5432/postgres

# The whole suite on SQLite, then again on PostgreSQL (a fresh database per test).
test: setup
	$(PYTHON) -m pytest -q -ra $(PYTEST_ARGS)
	bash scripts/postgres.sh
	ARENA_TEST_POSTGRES_URL=$(POSTGRES_URL) $(PYTHON) -m pytest -q -ra $(PYTEST_ARGS)

test-sqlite: setup
	$(PYTHON) -m pytest -q -ra $(PYTEST_ARGS)

# Pure tests only: no Docker, no Redis.
test-fast:
	$(PYTHON) -m pytest -q -m "not docker and not redis" $(PYTEST_ARGS)
