# Arena — the two commands a fresh Debian 12 machine (as root) needs:
#   make demo   set up, run the example algorithm on demo cases, serve the leaderboard
#   make test   set up, run the test suite
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench

setup:
	bash scripts/setup.sh

demo: setup
	arena demo

test: setup
	$(PYTHON) -m pytest -q -ra $(PYTEST_ARGS)

# Pure tests only: no Docker, no Redis.
test-fast:
	$(PYTHON) -m pytest -q -m "not docker and not redis" $(PYTEST_ARGS)
