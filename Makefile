# The two commands a newcomer needs: `make demo` (the pipeline) and `make test` (the suite).
# Each builds its own environment first; `make down` stops what `make demo` started.
SHELL := /bin/bash
.PHONY: setup demo test down lint lock audit bench-train

setup:
	@scripts/setup.sh

# demo builds the environment itself, beside the Docker engine's set-up.
demo:
	@scripts/demo.sh

test: setup
	@scripts/test.sh

down:
	@scripts/airflow-stack stop
	@scripts/mlflow-server stop
	@scripts/docker-engine stop

lint: setup
	@scripts/lint.sh

# Re-resolve requirements/base.in and dev.in; pin every version with its hashes into lock.txt,
# dev.txt and installer.txt, and re-hash serving.txt from the lock.
lock:
	@scripts/lock.sh

# Known vulnerabilities in the pinned packages (skipped, saying so, without the database).
audit: setup
	@scripts/audit.sh

bench-train: setup
	@.venv/bin/python benchmarks/train_recipes.py
